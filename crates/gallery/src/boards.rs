//! Boards and tags: a board is a named set of images (an image can be on several); tags are words searched with the
//! prompt.

use rusqlite::{params, params_from_iter, Connection};

use crate::{now, Entry, Gallery, GalleryError};

/// The most tags an image has, and the longest tag.
const MAX_TAGS: usize = 100;
const MAX_TAG_CHARS: usize = 64;

impl Gallery {
    /// Replaces the image's tags (trimmed; empty ones and repeats dropped; no commas inside a tag).
    pub fn set_tags(&self, id: u32, tags: &[String]) -> Result<Entry, GalleryError> {
        if tags.len() > MAX_TAGS {
            return Err(GalleryError::Invalid {
                field: "tags",
                message: format!("at most {MAX_TAGS} tags per image, got {}", tags.len()),
            });
        }
        let mut clean: Vec<&str> = Vec::new();
        for tag in tags {
            let tag = tag.trim();
            if tag.chars().count() > MAX_TAG_CHARS {
                return Err(GalleryError::Invalid {
                    field: "tags",
                    message: format!("a tag has at most {MAX_TAG_CHARS} characters"),
                });
            }
            if tag.contains(',') {
                return Err(GalleryError::Invalid {
                    field: "tags",
                    message: format!("'{tag}' contains a comma; give each tag separately"),
                });
            }
            if !tag.is_empty() && !clean.contains(&tag) {
                clean.push(tag);
            }
        }
        let changed = self.write().execute(
            "UPDATE images SET tags = ?2 WHERE id = ?1",
            params![id, clean.join(", ")],
        )?;
        if changed == 0 {
            return Err(GalleryError::NotFound(id));
        }
        self.get(id)
    }

    /// Files the image into the board `name` (created if new).
    pub fn add_to_board(&self, id: u32, name: &str) -> Result<Entry, GalleryError> {
        let name = board_name(name)?;
        self.get(id)?;
        {
            let conn = self.write();
            conn.execute(
                "INSERT INTO boards (name, created) VALUES (?1, ?2) ON CONFLICT(name) DO NOTHING",
                params![name, now()],
            )?;
            conn.execute(
                "INSERT OR IGNORE INTO board_images (board_id, image_id)
                 SELECT id, ?2 FROM boards WHERE name = ?1",
                params![name, id],
            )?;
        }
        self.get(id)
    }

    pub fn remove_from_board(&self, id: u32, name: &str) -> Result<Entry, GalleryError> {
        self.write().execute(
            "DELETE FROM board_images WHERE image_id = ?2 AND board_id = (SELECT id FROM boards WHERE name = ?1)",
            params![name, id],
        )?;
        self.get(id)
    }

    /// Creates an empty board (a name that exists already is refused).
    pub fn create_board(&self, name: &str) -> Result<(), GalleryError> {
        let name = board_name(name)?;
        let inserted = self.write().execute(
            "INSERT INTO boards (name, created) VALUES (?1, ?2) ON CONFLICT(name) DO NOTHING",
            params![name, now()],
        )?;
        if inserted == 0 {
            return Err(GalleryError::Invalid {
                field: "board",
                message: format!("a board named '{name}' exists already"),
            });
        }
        Ok(())
    }

    /// Renames a board; its images stay on it.
    pub fn rename_board(&self, from: &str, to: &str) -> Result<(), GalleryError> {
        let to = board_name(to)?;
        let conn = self.write();
        let taken: bool = conn.query_row(
            "SELECT EXISTS(SELECT 1 FROM boards WHERE name = ?1)",
            [to],
            |r| r.get(0),
        )?;
        if taken && from.trim() != to {
            return Err(GalleryError::Invalid {
                field: "board",
                message: format!("a board named '{to}' exists already"),
            });
        }
        let changed = conn.execute(
            "UPDATE boards SET name = ?2 WHERE name = ?1",
            params![from.trim(), to],
        )?;
        if changed == 0 {
            return Err(GalleryError::Invalid {
                field: "board",
                message: format!("there is no board named '{}'", from.trim()),
            });
        }
        Ok(())
    }

    /// Deletes a board; its images stay in the gallery.
    pub fn delete_board(&self, name: &str) -> Result<(), GalleryError> {
        let conn = self.write();
        conn.execute(
            "DELETE FROM board_images WHERE board_id = (SELECT id FROM boards WHERE name = ?1)",
            [name.trim()],
        )?;
        let deleted = conn.execute("DELETE FROM boards WHERE name = ?1", [name.trim()])?;
        if deleted == 0 {
            return Err(GalleryError::Invalid {
                field: "board",
                message: format!("there is no board named '{}'", name.trim()),
            });
        }
        Ok(())
    }

    /// Every board with how many images it holds.
    pub fn boards(&self) -> Result<Vec<(String, u32)>, GalleryError> {
        let conn = self.read();
        let mut statement = conn.prepare(
            "SELECT name, (SELECT count(*) FROM board_images WHERE board_id = boards.id) FROM boards ORDER BY name",
        )?;
        let rows = statement
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }
}

/// A board's name, trimmed; empty or overlong names are refused.
fn board_name(name: &str) -> Result<&str, GalleryError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(GalleryError::Invalid {
            field: "board",
            message: "a board needs a name of 1 to 100 characters".into(),
        });
    }
    Ok(name)
}

pub(crate) fn boards_of(
    conn: &Connection,
    ids: &[u32],
) -> Result<Vec<(u32, String)>, GalleryError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let marks = vec!["?"; ids.len()].join(",");
    let mut statement = conn.prepare(&format!(
        "SELECT image_id, name FROM board_images JOIN boards ON boards.id = board_id
         WHERE image_id IN ({marks}) ORDER BY name"
    ))?;
    let rows = statement
        .query_map(params_from_iter(ids.iter()), |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

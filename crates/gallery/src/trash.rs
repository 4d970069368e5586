//! The trash: a deleted image moves to `<data dir>/trash/` and can be restored until the trash is emptied.

use std::path::Path;

use rusqlite::params;

use crate::{io, now, Entry, Gallery, GalleryError};

impl Gallery {
    /// Moves the image to the trash folder (restorable until the trash is emptied).
    pub fn delete(&self, id: u32) -> Result<Entry, GalleryError> {
        let entry = self.get(id)?;
        if entry.trashed.is_some() {
            return Ok(entry);
        }
        let trash = self.trash_dir();
        std::fs::create_dir_all(&trash).map_err(|e| io(trash.display(), e))?;
        let name = Path::new(&entry.path)
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_else(|| "image.png".into());
        let target = trash.join(format!("{id}-{name}"));
        move_file(Path::new(&entry.path), &target)?;
        self.write().execute(
            "UPDATE images SET trashed = ?2, trash_path = ?3 WHERE id = ?1",
            params![id, now(), target.to_string_lossy()],
        )?;
        self.get(id)
    }

    /// Where a trashed image's file waits.
    pub(crate) fn trash_path(&self, id: u32) -> Result<String, GalleryError> {
        Ok(self
            .read()
            .query_row("SELECT trash_path FROM images WHERE id = ?1", [id], |r| {
                r.get(0)
            })?)
    }

    /// Puts a trashed image back where it was.
    pub fn restore(&self, id: u32) -> Result<Entry, GalleryError> {
        let entry = self.get(id)?;
        if entry.trashed.is_none() {
            return Ok(entry);
        }
        let trash_path = self.trash_path(id)?;
        let original = Path::new(&entry.path);
        if original.exists() {
            return Err(GalleryError::Io(format!(
                "cannot restore {id}: a file already exists at {}",
                entry.path
            )));
        }
        if let Some(parent) = original.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io(parent.display(), e))?;
        }
        move_file(Path::new(&trash_path), original)?;
        self.write().execute(
            "UPDATE images SET trashed = NULL, trash_path = NULL WHERE id = ?1",
            [id],
        )?;
        self.get(id)
    }

    /// Deletes every trashed image for good. Returns how many.
    pub fn empty_trash(&self) -> Result<u32, GalleryError> {
        let trashed: Vec<(u32, String)> = {
            let conn = self.read();
            let mut statement =
                conn.prepare("SELECT id, trash_path FROM images WHERE trashed IS NOT NULL")?;
            let rows = statement
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<Vec<_>, _>>()?;
            rows
        };
        for (id, path) in &trashed {
            let _ = std::fs::remove_file(path);
            let _ = std::fs::remove_file(self.thumbnail_path(*id));
            self.write()
                .execute("DELETE FROM images WHERE id = ?1", [id])?;
        }
        Ok(trashed.len() as u32)
    }
}

/// Renames, or copies and removes across file systems.
fn move_file(from: &Path, to: &Path) -> Result<(), GalleryError> {
    if std::fs::rename(from, to).is_ok() {
        return Ok(());
    }
    std::fs::copy(from, to).map_err(|e| io(format!("moving {}", from.display()), e))?;
    std::fs::remove_file(from).map_err(|e| io(from.display(), e))
}

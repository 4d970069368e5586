//! The gallery: every finished image recorded in SQLite (bundled, WAL) with its parameters, found by the words of
//! its prompt through FTS5, paged by a keyset that stays stable while new images arrive, and rebuildable from the
//! PNG files alone (our JSON record, A1111's `parameters`, ComfyUI's graph).
//!
//! Files come first, rows second: an image is written atomically before its row exists, a thumbnail is written to
//! a temporary name and renamed, and [`Gallery::reindex`] heals both directions (files without rows, rows without
//! files). Reads use their own connection, so a write in progress never blocks them.

mod boards;
pub mod parse;
mod reindex;
mod trash;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use boards::boards_of;
use diffugen_pngtext::INPUTS_FOLDER;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, Row};
use serde::{Deserialize, Serialize};

pub use parse::Parsed;

/// The media type of an image file the gallery holds or the API serves, by its extension (PNG, JPEG, WebP);
/// `None` for anything else.
pub fn media_type(path: &std::path::Path) -> Option<&'static str> {
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("png") => Some("image/png"),
        Some("jpg" | "jpeg") => Some("image/jpeg"),
        Some("webp") => Some("image/webp"),
        _ => None,
    }
}

/// Longest edge of a thumbnail, pixels.
pub const THUMBNAIL_SIZE: u32 = 256;
const DEFAULT_LIMIT: u32 = 50;
const MAX_LIMIT: u32 = 500;

#[derive(Debug, thiserror::Error)]
pub enum GalleryError {
    #[error("no gallery entry with id {0}")]
    NotFound(u32),
    #[error("invalid {field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error("{0}")]
    Io(String),
    #[error("the gallery database failed: {0}")]
    Db(#[from] rusqlite::Error),
}

impl GalleryError {
    /// Whether the disk is full: SQLite's SQLITE_FULL, or a file write that failed with ENOSPC.
    pub fn is_disk_full(&self) -> bool {
        match self {
            GalleryError::Db(rusqlite::Error::SqliteFailure(e, _)) => {
                e.code == rusqlite::ErrorCode::DiskFull
            }
            // io::Error's text ends with its OS error number.
            GalleryError::Io(message) => message.ends_with("(os error 28)"),
            _ => false,
        }
    }
}

fn io(context: impl std::fmt::Display, e: impl std::fmt::Display) -> GalleryError {
    GalleryError::Io(format!("{context}: {e}"))
}

/// A LoRA used for an image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, specta::Type)]
pub struct LoraUse {
    pub name: String,
    pub weight: f64,
}

/// What a remix restores beyond the gallery's columns (see [`Gallery::remix_extras`]).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct RemixExtras {
    pub hires: Option<RemixHires>,
    pub control: Option<RemixControl>,
    /// An inpainting's mask (PNG bytes, at the render's size), while it is still in the inputs folder.
    pub mask: Option<Vec<u8>>,
}

/// A recorded hires pass: the first pass's size and the pass itself.
#[derive(Debug, Clone, PartialEq)]
pub struct RemixHires {
    pub first_width: u32,
    pub first_height: u32,
    pub width: u32,
    pub height: u32,
    /// The wire name (`latent`, `lanczos`, `model`, ...).
    pub upscaler: String,
    /// The upscaling model's id, for `model`.
    pub model: Option<String>,
    pub steps: u32,
    pub denoising_strength: f64,
}

/// A recorded ControlNet with the control map it used (PNG bytes).
#[derive(Debug, Clone, PartialEq)]
pub struct RemixControl {
    pub model: String,
    pub strength: f64,
    pub map: Vec<u8>,
}

/// One image with everything recorded about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, specta::Type)]
pub struct Entry {
    pub id: u32,
    pub path: String,
    /// Unix seconds.
    pub created: f64,
    pub prompt: String,
    pub negative_prompt: String,
    pub model: Option<String>,
    pub family: Option<String>,
    pub width: u32,
    pub height: u32,
    pub steps: Option<u32>,
    pub cfg_scale: Option<f64>,
    pub sampler: Option<String>,
    pub scheduler: Option<String>,
    #[specta(type = Option<f64>)]
    pub seed: Option<i64>,
    pub loras: Vec<LoraUse>,
    pub init_image: Option<String>,
    pub strength: Option<f64>,
    pub generation_seconds: Option<f64>,
    pub job_id: Option<String>,
    pub favorite: bool,
    pub boards: Vec<String>,
    /// The user's own words for the image (searched with the prompt).
    pub tags: Vec<String>,
    /// Where the parameters came from: `diffugen`, `a1111`, `comfyui` or `unknown`.
    pub source: String,
    /// Unix seconds when moved to the trash; `null` while in the gallery.
    pub trashed: Option<f64>,
    /// How the image was enlarged from another (DiffuGen's upscale record), when it was.
    pub upscale: Option<Upscaled>,
    /// Who asked DiffuGen for it: `app`, `api`, `openai`, `a1111-txt2img`, `cli`, `mcp`, ... (`None`: made elsewhere, or before
    /// DiffuGen recorded it).
    pub client: Option<String>,
    /// Seconds it waited in the queue and for the GPU before its render (`generation_seconds` does not count them).
    pub queue_seconds: Option<f64>,
}

/// An upscaled image's link to what it was made from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, specta::Type)]
pub struct Upscaled {
    /// `Lanczos`, `Nearest`, or the ESRGAN model's id.
    pub upscaler: String,
    pub scale: f64,
    pub source_width: u32,
    pub source_height: u32,
    /// The source image's gallery id, when it was upscaled from the gallery.
    pub source_id: Option<u32>,
    /// The source's file name, when it came from a file.
    pub source_file: Option<String>,
}

impl Upscaled {
    /// Reads DiffuGen's `upscale` record (`source` is `gallery:<id>` or a file name).
    pub fn from_record(record: &serde_json::Value) -> Option<Upscaled> {
        let source = record.get("source").and_then(|s| s.as_str());
        let source_id = source
            .and_then(|s| s.strip_prefix("gallery:"))
            .and_then(|id| id.parse().ok());
        Some(Upscaled {
            upscaler: record.get("upscaler")?.as_str()?.to_string(),
            scale: record.get("scale")?.as_f64()?,
            source_width: record.get("source_width")?.as_u64()? as u32,
            source_height: record.get("source_height")?.as_u64()? as u32,
            source_id,
            source_file: source.filter(|_| source_id.is_none()).map(str::to_string),
        })
    }
}

/// Newest or oldest first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, specta::Type)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    #[default]
    Newest,
    Oldest,
}

/// What to list. Every filter is optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, specta::Type)]
#[serde(default)]
pub struct Query {
    /// Words searched in prompt, negative prompt and tags (prefixes match: `light` finds `lighthouse`).
    pub text: Option<String>,
    pub model: Option<String>,
    pub family: Option<String>,
    pub board: Option<String>,
    pub favorite: Option<bool>,
    /// Unix seconds, inclusive.
    pub from: Option<f64>,
    pub to: Option<f64>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub order: Order,
    /// From a previous page's `next_cursor`.
    pub cursor: Option<String>,
    /// 1..=500, default 50.
    pub limit: Option<u32>,
    /// List the trash instead of the gallery.
    pub trashed: bool,
}

/// One page of results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, specta::Type)]
pub struct Page {
    pub entries: Vec<Entry>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// What a reindex did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, specta::Type)]
pub struct ReindexReport {
    pub scanned: u32,
    pub added: u32,
    /// Rows whose file no longer exists.
    pub removed: u32,
    /// PNGs that could not be read.
    pub unreadable: Vec<String>,
}

/// The gallery of one data folder: `<data>/gallery.sqlite`, `<data>/thumbnails/`, `<data>/trash/`.
pub struct Gallery {
    dir: PathBuf,
    outputs: PathBuf,
    writer: Mutex<Connection>,
    reader: Mutex<Connection>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,
    created REAL NOT NULL,
    prompt TEXT NOT NULL DEFAULT '',
    negative_prompt TEXT NOT NULL DEFAULT '',
    tags TEXT NOT NULL DEFAULT '',
    model TEXT, family TEXT,
    width INTEGER NOT NULL, height INTEGER NOT NULL,
    steps INTEGER, cfg_scale REAL, sampler TEXT, scheduler TEXT, seed INTEGER,
    loras TEXT NOT NULL DEFAULT '[]',
    init_image TEXT, strength REAL, generation_seconds REAL, job_id TEXT,
    favorite INTEGER NOT NULL DEFAULT 0,
    source TEXT NOT NULL,
    trashed REAL, trash_path TEXT
);
CREATE INDEX IF NOT EXISTS images_created ON images(trashed, created, id);
CREATE INDEX IF NOT EXISTS images_model ON images(model, created, id);
CREATE INDEX IF NOT EXISTS images_family ON images(family, created, id);
CREATE INDEX IF NOT EXISTS images_favorite ON images(favorite, created, id);
CREATE TABLE IF NOT EXISTS boards (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS board_images (
    board_id INTEGER NOT NULL REFERENCES boards(id) ON DELETE CASCADE,
    image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    PRIMARY KEY (board_id, image_id)
);
CREATE INDEX IF NOT EXISTS board_images_image ON board_images(image_id);
CREATE VIRTUAL TABLE IF NOT EXISTS images_fts USING fts5(
    prompt, negative_prompt, tags, content='images', content_rowid='id'
);
CREATE TRIGGER IF NOT EXISTS images_ai AFTER INSERT ON images BEGIN
    INSERT INTO images_fts(rowid, prompt, negative_prompt, tags) VALUES (new.id, new.prompt, new.negative_prompt, new.tags);
END;
CREATE TRIGGER IF NOT EXISTS images_ad AFTER DELETE ON images BEGIN
    INSERT INTO images_fts(images_fts, rowid, prompt, negative_prompt, tags)
        VALUES ('delete', old.id, old.prompt, old.negative_prompt, old.tags);
END;
CREATE TRIGGER IF NOT EXISTS images_au AFTER UPDATE OF prompt, negative_prompt, tags ON images BEGIN
    INSERT INTO images_fts(images_fts, rowid, prompt, negative_prompt, tags)
        VALUES ('delete', old.id, old.prompt, old.negative_prompt, old.tags);
    INSERT INTO images_fts(rowid, prompt, negative_prompt, tags) VALUES (new.id, new.prompt, new.negative_prompt, new.tags);
END;
";

const COLUMNS: &str = "id, path, created, prompt, negative_prompt, model, family, width, height, steps, cfg_scale, \
                       sampler, scheduler, seed, loras, init_image, strength, generation_seconds, job_id, favorite, \
                       source, trashed, tags, upscale, client, queue_seconds";

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

fn connect(path: &Path) -> Result<Connection, GalleryError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(conn)
}

/// The WHERE clauses and their values for a query's filters (not its cursor).
fn filter(query: &Query) -> (Vec<String>, Vec<rusqlite::types::Value>) {
    let mut clauses = vec![if query.trashed {
        "trashed IS NOT NULL".to_string()
    } else {
        "trashed IS NULL".to_string()
    }];
    let mut values: Vec<rusqlite::types::Value> = Vec::new();
    let mut bind = |clause: &str, value: rusqlite::types::Value| {
        values.push(value);
        clause.replace('?', &format!("?{}", values.len()))
    };
    use rusqlite::types::Value as V;
    if let Some(text) = query.text.as_deref().and_then(fts_query) {
        clauses.push(bind(
            "id IN (SELECT rowid FROM images_fts WHERE images_fts MATCH ?)",
            V::Text(text),
        ));
    }
    if let Some(model) = &query.model {
        clauses.push(bind("model = ?", V::Text(model.clone())));
    }
    if let Some(family) = &query.family {
        clauses.push(bind("family = ?", V::Text(family.clone())));
    }
    if let Some(favorite) = query.favorite {
        clauses.push(bind("favorite = ?", V::Integer(i64::from(favorite))));
    }
    if let Some(board) = &query.board {
        clauses.push(bind(
            "id IN (SELECT image_id FROM board_images JOIN boards ON boards.id = board_id WHERE boards.name = ?)",
            V::Text(board.clone()),
        ));
    }
    if let Some(from) = query.from {
        clauses.push(bind("created >= ?", V::Real(from)));
    }
    if let Some(to) = query.to {
        clauses.push(bind("created <= ?", V::Real(to)));
    }
    if let Some(width) = query.width {
        clauses.push(bind("width = ?", V::Integer(width.into())));
    }
    if let Some(height) = query.height {
        clauses.push(bind("height = ?", V::Integer(height.into())));
    }
    (clauses, values)
}

/// Turns what a user typed into an FTS5 query that cannot fail to parse: each word becomes a quoted prefix term
/// (`"light"*`), quotes inside doubled, so `"`, `*`, `AND`, `-` or `(` are just text.
pub fn fts_query(text: &str) -> Option<String> {
    let terms: Vec<String> = text
        .split(|c: char| c.is_whitespace() || c == ',')
        .map(|w| w.trim_matches(|c: char| !c.is_alphanumeric()))
        .filter(|w| !w.is_empty())
        .map(|w| format!("\"{}\"*", w.replace('"', "\"\"")))
        .collect();
    (!terms.is_empty()).then(|| terms.join(" "))
}

fn entry(row: &Row<'_>) -> rusqlite::Result<Entry> {
    let loras: String = row.get(14)?;
    Ok(Entry {
        id: row.get::<_, i64>(0)? as u32,
        path: row.get(1)?,
        created: row.get(2)?,
        prompt: row.get(3)?,
        negative_prompt: row.get(4)?,
        model: row.get(5)?,
        family: row.get(6)?,
        width: row.get(7)?,
        height: row.get(8)?,
        steps: row.get(9)?,
        cfg_scale: row.get(10)?,
        sampler: row.get(11)?,
        scheduler: row.get(12)?,
        seed: row.get(13)?,
        loras: serde_json::from_str(&loras).unwrap_or_default(),
        init_image: row.get(15)?,
        strength: row.get(16)?,
        generation_seconds: row.get(17)?,
        job_id: row.get(18)?,
        favorite: row.get::<_, i64>(19)? != 0,
        boards: Vec::new(),
        tags: row
            .get::<_, String>(22)?
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(String::from)
            .collect(),
        source: row.get(20)?,
        trashed: row.get(21)?,
        upscale: row
            .get::<_, Option<String>>(23)?
            .and_then(|text| serde_json::from_str(&text).ok())
            .and_then(|v: serde_json::Value| Upscaled::from_record(&v)),
        client: row.get(24)?,
        queue_seconds: row.get(25)?,
    })
}

/// Brings a gallery written by an earlier version up to this schema (columns added since).
fn migrate(conn: &Connection) -> Result<(), GalleryError> {
    let has_upscale: bool = conn
        .prepare("SELECT 1 FROM pragma_table_info('images') WHERE name = 'upscale'")?
        .exists([])?;
    if !has_upscale {
        conn.execute_batch("ALTER TABLE images ADD COLUMN upscale TEXT")?;
    }
    let has_client: bool = conn
        .prepare("SELECT 1 FROM pragma_table_info('images') WHERE name = 'client'")?
        .exists([])?;
    if !has_client {
        conn.execute_batch(
            "ALTER TABLE images ADD COLUMN client TEXT; ALTER TABLE images ADD COLUMN queue_seconds REAL;",
        )?;
    }
    Ok(())
}

fn encode_cursor(entry: &Entry) -> String {
    format!("{}_{}", entry.created, entry.id)
}

fn decode_cursor(cursor: &str) -> Result<(f64, i64), GalleryError> {
    let invalid = || GalleryError::Invalid {
        field: "cursor",
        message: format!("'{cursor}' is not a cursor from a previous page"),
    };
    let (created, id) = cursor.rsplit_once('_').ok_or_else(invalid)?;
    Ok((
        created.parse().map_err(|_| invalid())?,
        id.parse().map_err(|_| invalid())?,
    ))
}

impl Gallery {
    /// Opens (creating if needed) the gallery of the data folder `dir`.
    pub fn open(dir: &Path) -> Result<Gallery, GalleryError> {
        std::fs::create_dir_all(dir).map_err(|e| io(dir.display(), e))?;
        let db = dir.join("gallery.sqlite");
        let writer = connect(&db)?;
        writer.execute_batch(SCHEMA)?;
        migrate(&writer)?;
        let reader = connect(&db)?;
        Ok(Gallery {
            dir: dir.to_path_buf(),
            outputs: dir.join("outputs"),
            writer: Mutex::new(writer),
            reader: Mutex::new(reader),
        })
    }

    fn write(&self) -> MutexGuard<'_, Connection> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn read(&self) -> MutexGuard<'_, Connection> {
        self.reader.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Where images are written: what `reindex` reads by default.
    pub fn outputs_dir(&self) -> PathBuf {
        self.outputs.clone()
    }

    /// The same gallery, with images written to `outputs` instead of `<data dir>/outputs`.
    pub fn with_outputs_dir(mut self, outputs: PathBuf) -> Gallery {
        self.outputs = outputs;
        self
    }

    fn thumbnails_dir(&self) -> PathBuf {
        self.dir.join("thumbnails")
    }

    fn trash_dir(&self) -> PathBuf {
        self.dir.join("trash")
    }

    /// Records a finished image (already written in full) and makes its thumbnail. Returns its id; a file
    /// already recorded keeps its row.
    pub fn add(&self, path: &Path) -> Result<u32, GalleryError> {
        let id = self.insert(path)?;
        if let Err(e) = self.thumbnail(id) {
            tracing::warn!(id, error = %e, "could not make a thumbnail; it will be made when first shown");
        }
        Ok(id)
    }

    /// Reads a PNG's parameters and inserts its row (no thumbnail).
    fn insert(&self, path: &Path) -> Result<u32, GalleryError> {
        let path = std::fs::canonicalize(path).map_err(|e| io(path.display(), e))?;
        let key = path.to_string_lossy().to_string();
        if let Some(id) = self
            .read()
            .query_row("SELECT id FROM images WHERE path = ?1", [&key], |r| {
                r.get::<_, i64>(0)
            })
            .optional()?
        {
            return Ok(id as u32);
        }
        let (width, height) = image::image_dimensions(&path).map_err(|e| io(path.display(), e))?;
        let chunks = diffugen_pngtext::read(&path).map_err(|e| io(path.display(), e))?;
        let p = parse::parse(&chunks);
        let created = p.created.unwrap_or_else(|| {
            std::fs::metadata(&path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or_else(now, |d| d.as_secs_f64())
        });
        let loras: Vec<LoraUse> = p
            .loras
            .iter()
            .map(|(name, weight)| LoraUse {
                name: name.clone(),
                weight: *weight,
            })
            .collect();
        let conn = self.write();
        conn.execute(
            "INSERT INTO images (path, created, prompt, negative_prompt, model, family, width, height, steps,
                cfg_scale, sampler, scheduler, seed, loras, init_image, strength, generation_seconds, job_id, source,
                upscale, client, queue_seconds)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21,
                ?22)
             ON CONFLICT(path) DO NOTHING",
            params![
                key,
                created,
                p.prompt,
                p.negative_prompt,
                p.model,
                p.family,
                width,
                height,
                p.steps,
                p.cfg_scale,
                p.sampler,
                p.scheduler,
                p.seed,
                serde_json::to_string(&loras).unwrap_or_else(|_| "[]".into()),
                p.init_image,
                p.strength,
                p.generation_seconds,
                p.job_id,
                p.source,
                p.upscale,
                p.client,
                p.queue_seconds,
            ],
        )?;
        let id: i64 = conn.query_row("SELECT id FROM images WHERE path = ?1", [&key], |r| {
            r.get(0)
        })?;
        Ok(id as u32)
    }

    /// One entry, boards included.
    pub fn get(&self, id: u32) -> Result<Entry, GalleryError> {
        let conn = self.read();
        let mut entry = conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM images WHERE id = ?1"),
                [id],
                entry,
            )
            .optional()?
            .ok_or(GalleryError::NotFound(id))?;
        entry.boards = boards_of(&conn, &[id])?
            .into_iter()
            .map(|(_, b)| b)
            .collect();
        Ok(entry)
    }

    /// A page of entries matching `query`, in its order, after its cursor.
    pub fn list(&self, query: &Query) -> Result<Page, GalleryError> {
        let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(GalleryError::Invalid {
                field: "limit",
                message: format!("{limit} is out of range; use 1..={MAX_LIMIT}"),
            });
        }
        let (mut clauses, mut values) = filter(query);
        let mut bind = |clause: &str, value: rusqlite::types::Value| {
            values.push(value);
            clause.replace('?', &format!("?{}", values.len()))
        };
        use rusqlite::types::Value as V;
        let (cmp, dir) = match query.order {
            Order::Newest => ("<", "DESC"),
            Order::Oldest => (">", "ASC"),
        };
        if let Some(cursor) = &query.cursor {
            let (created, id) = decode_cursor(cursor)?;
            let a = bind("?", V::Real(created));
            let b = bind("?", V::Integer(id));
            clauses.push(format!("(created, id) {cmp} ({a}, {b})"));
        }
        let sql = format!(
            "SELECT {COLUMNS} FROM images WHERE {} ORDER BY created {dir}, id {dir} LIMIT {}",
            clauses.join(" AND "),
            limit + 1
        );
        let conn = self.read();
        let mut statement = conn.prepare_cached(&sql)?;
        let mut entries = statement
            .query_map(params_from_iter(values.iter()), entry)?
            .collect::<Result<Vec<_>, _>>()?;
        let more = entries.len() > limit as usize;
        entries.truncate(limit as usize);
        let ids: Vec<u32> = entries.iter().map(|e| e.id).collect();
        for (id, board) in boards_of(&conn, &ids)? {
            if let Some(e) = entries.iter_mut().find(|e| e.id == id) {
                e.boards.push(board);
            }
        }
        Ok(Page {
            next_cursor: more.then(|| entries.last().map(encode_cursor)).flatten(),
            entries,
        })
    }

    /// The most ids [`Gallery::ids_between`] returns: a shift-click range in a huge gallery stays bounded.
    pub const MAX_RANGE: usize = 10_000;

    /// The ids of every entry matching `query`'s filters from entry `from` to entry `to` (both included, either
    /// order) in the query's order — a shift-click range, whether or not the grid has loaded the pages between.
    pub fn ids_between(&self, query: &Query, from: u32, to: u32) -> Result<Vec<u32>, GalleryError> {
        let key = |id: u32| -> Result<(f64, i64), GalleryError> {
            let e = self.get(id)?;
            Ok((e.created, i64::from(e.id)))
        };
        let (a, b) = (key(from)?, key(to)?);
        let (low, high) = if a <= b { (a, b) } else { (b, a) };
        let (mut clauses, mut values) = filter(query);
        use rusqlite::types::Value as V;
        for (op, (created, id)) in [(">=", low), ("<=", high)] {
            values.push(V::Real(created));
            let c = values.len();
            values.push(V::Integer(id));
            clauses.push(format!("(created, id) {op} (?{c}, ?{})", c + 1));
        }
        let dir = match query.order {
            Order::Newest => "DESC",
            Order::Oldest => "ASC",
        };
        let sql = format!(
            "SELECT id FROM images WHERE {} ORDER BY created {dir}, id {dir} LIMIT {}",
            clauses.join(" AND "),
            Self::MAX_RANGE + 1
        );
        let conn = self.read();
        let mut statement = conn.prepare_cached(&sql)?;
        let ids = statement
            .query_map(params_from_iter(values.iter()), |r| r.get::<_, i64>(0))?
            .map(|id| id.map(|id| id as u32))
            .collect::<Result<Vec<_>, _>>()?;
        if ids.len() > Self::MAX_RANGE {
            return Err(GalleryError::Invalid {
                field: "range",
                message: format!(
                    "the range holds more than {} images; select fewer",
                    Self::MAX_RANGE
                ),
            });
        }
        Ok(ids)
    }

    pub fn set_favorite(&self, id: u32, favorite: bool) -> Result<Entry, GalleryError> {
        let changed = self.write().execute(
            "UPDATE images SET favorite = ?2 WHERE id = ?1",
            params![id, i64::from(favorite)],
        )?;
        if changed == 0 {
            return Err(GalleryError::NotFound(id));
        }
        self.get(id)
    }

    fn thumbnail_path(&self, id: u32) -> PathBuf {
        self.thumbnails_dir().join(format!("{id}.jpg"))
    }

    /// The thumbnail's path, made from the image when missing (about 256 px, JPEG).
    pub fn thumbnail(&self, id: u32) -> Result<PathBuf, GalleryError> {
        let target = self.thumbnail_path(id);
        if target.exists() {
            return Ok(target);
        }
        let entry = self.get(id)?;
        let source = if entry.trashed.is_some() {
            self.trash_path(id)?
        } else {
            entry.path.clone()
        };
        let image = image::open(&source).map_err(|e| io(&source, e))?;
        let small = image.thumbnail(THUMBNAIL_SIZE, THUMBNAIL_SIZE).to_rgb8();
        let dir = self.thumbnails_dir();
        std::fs::create_dir_all(&dir).map_err(|e| io(dir.display(), e))?;
        let temporary = dir.join(format!(".{id}.jpg.tmp-{}", std::process::id()));
        let mut bytes = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 85)
            .encode_image(&small)
            .map_err(|e| io("thumbnail", e))?;
        std::fs::write(&temporary, &bytes).map_err(|e| io(temporary.display(), e))?;
        std::fs::rename(&temporary, &target).map_err(|e| io(target.display(), e))?;
        Ok(target)
    }

    /// The entry's parameters as a job request ("remix"): same model, prompts, size, steps, cfg, sampler,
    /// scheduler, seed and LoRAs — for an img2img or inpainting result its init image (as base64, the way the
    /// job API takes images), strength and mask, for a hires result its hires pass (from the first pass's size), and for a
    /// ControlNet render its control map, model and strength.
    pub fn remix(&self, id: u32) -> Result<serde_json::Value, GalleryError> {
        use base64::Engine as _;
        let e = self.get(id)?;
        let init = self.init_image(&e);
        let kept = self.remix_extras(&e);
        let mut request = serde_json::json!({
            "model": e.model,
            "prompt": e.prompt,
            "negative_prompt": e.negative_prompt,
            "width": e.width,
            "height": e.height,
            "steps": e.steps,
            "cfg_scale": e.cfg_scale,
            "sampler": e.sampler,
            "scheduler": e.scheduler,
            "seed": e.seed,
            "loras": e.loras,
        });
        if let Some(bytes) = init.and_then(|path| std::fs::read(path).ok()) {
            request["init_image"] = serde_json::json!({ "base64": base64::engine::general_purpose::STANDARD.encode(bytes) });
            request["strength"] = serde_json::json!(e.strength);
            // An inpainting repaints what its mask covers: without it, the remix would rework the whole image.
            if let Some(mask) = &kept.mask {
                request["mask"] = serde_json::json!({ "base64": base64::engine::general_purpose::STANDARD.encode(mask) });
            }
        }
        if let Some(hires) = kept.hires {
            request["width"] = serde_json::json!(hires.first_width);
            request["height"] = serde_json::json!(hires.first_height);
            request["hires"] = serde_json::json!({
                "width": hires.width,
                "height": hires.height,
                "upscaler": hires.upscaler,
                "model": hires.model,
                "steps": hires.steps,
                "denoising_strength": hires.denoising_strength,
            });
        }
        if let Some(control) = kept.control {
            request["control"] = serde_json::json!({
                "model": control.model,
                // The map as the render used it: already through its preprocessor.
                "image": { "base64": base64::engine::general_purpose::STANDARD.encode(control.map) },
                "module": "none",
                "strength": control.strength,
            });
        }
        // Drop what is unknown, so the engine's defaults apply instead of nulls.
        if let Some(map) = request.as_object_mut() {
            map.retain(|_, v| !v.is_null());
        }
        Ok(request)
    }

    /// The default strength of [`Gallery::refine`]: enough to sharpen details, little enough to keep the picture.
    pub const REFINE_STRENGTH: f64 = 0.35;

    /// A refine of an entry (the original project's `refine_image`) as a `POST /api/v1/jobs` body: img2img of the
    /// image itself at `strength` (0 < s <= 1), with its own prompt, model, parameters and seed.
    pub fn refine(&self, id: u32, strength: f64) -> Result<serde_json::Value, GalleryError> {
        use base64::Engine as _;
        if !(strength > 0.0 && strength <= 1.0) {
            return Err(GalleryError::Invalid {
                field: "strength",
                message: format!("must be above 0 and at most 1, got {strength}"),
            });
        }
        let e = self.get(id)?;
        if e.model.is_none() {
            return Err(GalleryError::Invalid {
                field: "id",
                message: format!(
                    "image {id} has no generation parameters to refine with (no model is recorded); remix it with a \
                     model instead"
                ),
            });
        }
        let bytes = std::fs::read(&e.path).map_err(|err| io(&e.path, err))?;
        let mut request = self.remix(id)?;
        request["init_image"] = serde_json::json!({ "base64": base64::engine::general_purpose::STANDARD.encode(bytes) });
        request["strength"] = serde_json::json!(strength);
        // The image's own size (an upscaled image is refined at its new size).
        request["width"] = serde_json::json!(e.width);
        request["height"] = serde_json::json!(e.height);
        // Image-to-image of the finished picture: no hires pass (text-to-image only), no control map made for
        // another size.
        if let Some(map) = request.as_object_mut() {
            map.remove("mask");
            map.remove("hires");
            map.remove("control");
        }
        Ok(request)
    }

    /// What DiffuGen's own record of an entry keeps beyond the gallery's columns: its hires pass, its ControlNet
    /// (with the control map) and an inpainting's mask — pictures only while they are still in the inputs folder.
    /// Nothing for images from elsewhere.
    pub fn remix_extras(&self, entry: &Entry) -> RemixExtras {
        let record = diffugen_pngtext::read(Path::new(&entry.path))
            .ok()
            .and_then(|chunks| chunks.into_iter().find(|(k, _)| k == "diffugen"))
            .and_then(|(_, text)| serde_json::from_str::<serde_json::Value>(&text).ok());
        let Some(record) = record else {
            return RemixExtras::default();
        };
        let number =
            |v: &serde_json::Value, key: &str| v.get(key).and_then(serde_json::Value::as_f64);
        let hires = record.get("hires").filter(|h| h.is_object()).and_then(|h| {
            Some(RemixHires {
                first_width: number(&record, "width")? as u32,
                first_height: number(&record, "height")? as u32,
                width: number(h, "width")? as u32,
                height: number(h, "height")? as u32,
                upscaler: h.get("upscaler")?.as_str()?.to_string(),
                model: h
                    .get("model")
                    .and_then(|m| m.get("id"))
                    .and_then(serde_json::Value::as_str)
                    .map(String::from),
                steps: number(h, "steps")? as u32,
                denoising_strength: number(h, "denoising_strength")?,
            })
        });
        let control = record
            .get("control")
            .filter(|c| c.is_object())
            .and_then(|c| {
                let map = self.kept_input(entry, c.get("image")?.as_str()?)?;
                Some(RemixControl {
                    model: c.get("model")?.as_str()?.to_string(),
                    strength: number(c, "strength").unwrap_or(1.0),
                    map: std::fs::read(map).ok()?,
                })
            });
        let mask = record
            .get("mask")
            .and_then(serde_json::Value::as_str)
            .and_then(|recorded| self.kept_input(entry, recorded))
            .and_then(|path| std::fs::read(path).ok());
        RemixExtras {
            hires,
            control,
            mask,
        }
    }

    /// A picture a record names, when it is a PNG DiffuGen kept in the inputs folder beside the entry's image: a path
    /// recorded in a PNG is only a claim, so nothing outside that folder is ever read.
    fn kept_input(&self, entry: &Entry, recorded: &str) -> Option<PathBuf> {
        let recorded = std::fs::canonicalize(recorded).ok()?;
        let inputs =
            std::fs::canonicalize(Path::new(&entry.path).parent()?.join(INPUTS_FOLDER)).ok()?;
        (recorded.parent() == Some(inputs.as_path())
            && recorded.extension().is_some_and(|x| x == "png")
            && recorded.is_file())
        .then_some(recorded)
    }

    /// The init image an entry was rendered from, when DiffuGen kept it: a file in the `inputs` folder beside the
    /// entry's image. A path recorded in a PNG is only a claim, so nothing outside that folder is ever read.
    pub fn init_image(&self, entry: &Entry) -> Option<PathBuf> {
        self.kept_input(entry, entry.init_image.as_deref()?)
    }

    /// How many entries match `query`'s filters (its cursor and limit aside): the height of a scrolled grid.
    pub fn count_matching(&self, query: &Query) -> Result<u32, GalleryError> {
        let (clauses, values) = filter(query);
        let sql = format!(
            "SELECT COUNT(*) FROM images WHERE {}",
            clauses.join(" AND ")
        );
        let conn = self.read();
        let mut statement = conn.prepare_cached(&sql)?;
        Ok(statement.query_row(params_from_iter(values.iter()), |row| row.get(0))?)
    }

    /// How many images (not in the trash) the gallery holds.
    pub fn count(&self) -> Result<u32, GalleryError> {
        Ok(self.read().query_row(
            "SELECT count(*) FROM images WHERE trashed IS NULL",
            [],
            |r| r.get(0),
        )?)
    }

    /// Inserts many synthetic rows in one transaction (benchmarks and tests of scale; behind the `synthetic`
    /// feature, off in the app and the CLI).
    #[cfg(feature = "synthetic")]
    pub fn insert_synthetic(
        &self,
        rows: &[(String, f64, String, String)],
    ) -> Result<(), GalleryError> {
        let mut conn = self.write();
        let tx = conn.transaction()?;
        {
            let mut statement = tx.prepare(
                "INSERT INTO images (path, created, prompt, model, family, width, height, steps, seed, source)
                 VALUES (?1, ?2, ?3, ?4, 'sd1', 512, 512, 20, 1, 'diffugen')",
            )?;
            for (path, created, prompt, model) in rows {
                statement.execute(params![path, created, prompt, model])?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_search_text_becomes_quoted_prefix_terms() {
        assert_eq!(fts_query("red fox").unwrap(), "\"red\"* \"fox\"*");
        assert_eq!(fts_query("\"unterminated").unwrap(), "\"unterminated\"*");
        assert_eq!(fts_query("*"), None);
        assert_eq!(fts_query("a\"b").unwrap(), "\"a\"\"b\"*");
        assert_eq!(
            fts_query("NEAR( AND OR -x").unwrap(),
            "\"NEAR\"* \"AND\"* \"OR\"* \"x\"*"
        );
    }

    #[test]
    fn gallery_types_export_to_typescript_without_bigint() {
        let types = specta::Types::default()
            .register::<Page>()
            .register::<Query>()
            .register::<ReindexReport>();
        let ts = specta_typescript::Typescript::default()
            .export(&types, specta_serde::Format)
            .expect("exports");
        assert!(ts.contains("Entry") && !ts.contains("bigint"), "{ts}");
    }
}

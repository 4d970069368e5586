//! Rebuilding the gallery from the files: every PNG under the outputs folder is read back into a row (its own record
//! or another tool's parameters), rows whose file is gone are dropped, half-written thumbnails are removed.

use std::path::Path;

use crate::{Gallery, GalleryError, ReindexReport, INPUTS_FOLDER};

impl Gallery {
    /// Reads every PNG under `dir` (default: the outputs folder) into the gallery and drops rows whose file is
    /// gone. Thumbnails are made when first shown.
    pub fn reindex(&self, dir: Option<&Path>) -> Result<ReindexReport, GalleryError> {
        let root = dir
            .map(Path::to_path_buf)
            .unwrap_or_else(|| self.outputs_dir());
        let mut report = ReindexReport::default();
        let mut pending = vec![root.clone()];
        let mut files = Vec::new();
        while let Some(folder) = pending.pop() {
            let Ok(listing) = std::fs::read_dir(&folder) else {
                if folder == root && dir.is_some() {
                    return Err(GalleryError::Invalid {
                        field: "dir",
                        message: format!("{} is not a readable folder", root.display()),
                    });
                }
                continue;
            };
            for item in listing.flatten() {
                let path = item.path();
                let name = item.file_name().to_string_lossy().to_string();
                if name.starts_with('.') {
                    continue; // hidden files and our own temporary files
                }
                match item.file_type() {
                    // The init images jobs rendered from are kept there; they are not results.
                    Ok(t) if t.is_dir() && folder == root && name == INPUTS_FOLDER => {}
                    Ok(t) if t.is_dir() => pending.push(path),
                    Ok(_) if name.to_ascii_lowercase().ends_with(".png") => files.push(path),
                    _ => {}
                }
            }
        }
        files.sort();
        let known: std::collections::HashSet<String> = {
            let conn = self.read();
            let mut statement = conn.prepare("SELECT path FROM images")?;
            let rows = statement
                .query_map([], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            rows
        };
        for file in files {
            report.scanned += 1;
            let canonical = std::fs::canonicalize(&file).unwrap_or(file.clone());
            if known.contains(&*canonical.to_string_lossy()) {
                continue;
            }
            match self.insert(&file) {
                Ok(_) => report.added += 1,
                Err(e) => {
                    tracing::warn!(file = %file.display(), error = %e, "not indexed");
                    report.unreadable.push(file.display().to_string());
                }
            }
        }
        // Thumbnails half-written when a process died.
        if let Ok(listing) = std::fs::read_dir(self.thumbnails_dir()) {
            for item in listing.flatten() {
                if item.file_name().to_string_lossy().contains(".jpg.tmp-") {
                    let _ = std::fs::remove_file(item.path());
                }
            }
        }
        // Rows whose file is gone (in the gallery or in the trash).
        let rows: Vec<(u32, String, Option<String>)> = {
            let conn = self.read();
            let mut statement = conn.prepare("SELECT id, path, trash_path FROM images")?;
            let rows = statement
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<Result<Vec<_>, _>>()?;
            rows
        };
        for (id, path, trash_path) in rows {
            let file = trash_path.unwrap_or(path);
            if !Path::new(&file).exists() {
                self.write()
                    .execute("DELETE FROM images WHERE id = ?1", [id])?;
                let _ = std::fs::remove_file(self.thumbnail_path(id));
                report.removed += 1;
            }
        }
        Ok(report)
    }
}

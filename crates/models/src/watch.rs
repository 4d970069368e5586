//! Noticing model files that appear, change or go in the model folders, so a listing refreshes on its own: the
//! folders are watched recursively (inotify, FSEvents or ReadDirectoryChangesW through `notify`), and a burst of
//! changes — a 7 GB file being copied in, a ComfyUI tree unpacked — is reported once, after the folders have been
//! quiet for a moment. Downloads in progress (`*.part`) and files of other kinds are not changes to the library.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, EventKind};
use notify::{RecommendedWatcher, RecursiveMode, Watcher};

use crate::MODEL_EXTENSIONS;

/// Watches model folders until dropped.
pub struct FolderWatcher {
    _watcher: RecommendedWatcher,
    watched: Vec<PathBuf>,
}

/// Whether a change to `path` can change what the library lists: a model file, a preset, or a folder (whose
/// contents come or go with it; a removed path can no longer tell, so a name without extension counts).
fn matters(path: &Path) -> bool {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    if name.starts_with('.') {
        return false;
    }
    if name.ends_with(".preset.json") {
        return true;
    }
    match path.extension() {
        Some(ext) => {
            let ext = ext.to_string_lossy().to_ascii_lowercase();
            MODEL_EXTENSIONS.contains(&ext.as_str())
        }
        None => true,
    }
}

fn relevant(event: &notify::Event) -> bool {
    let kind_counts = match event.kind {
        // Reading a file changes nothing; a file closed after writing is the end of a copy.
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    };
    kind_counts && event.paths.iter().any(|p| matters(p))
}

impl FolderWatcher {
    /// Watches `dirs` (and everything below them). `on_change` runs on a background thread with the paths that
    /// changed, once no further change has come for `settle`. A folder that cannot be watched (missing, or the
    /// system's watch limit reached) is logged and skipped: rescanning by hand still works.
    pub fn start(
        dirs: &[PathBuf],
        settle: Duration,
        on_change: impl Fn(Vec<PathBuf>) + Send + 'static,
    ) -> Result<FolderWatcher, String> {
        let (sender, receiver) = mpsc::channel::<notify::Event>();
        let mut watcher = notify::recommended_watcher(
            move |result: notify::Result<notify::Event>| match result {
                Ok(event) if relevant(&event) => {
                    let _ = sender.send(event);
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "watching the model folders"),
            },
        )
        .map_err(|e| format!("cannot watch the model folders: {e}"))?;
        let mut watched = Vec::new();
        // Parents first, so a folder inside another watched one is not watched (and reported) twice.
        let mut dirs = dirs.to_vec();
        dirs.sort_by_key(|d| d.components().count());
        for dir in &dirs {
            if watched.iter().any(|w: &PathBuf| dir.starts_with(w)) {
                continue;
            }
            match watcher.watch(dir, RecursiveMode::Recursive) {
                Ok(()) => watched.push(dir.clone()),
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "this model folder is not watched for changes")
                }
            }
        }
        std::thread::Builder::new()
            .name("model-folders".into())
            .spawn(move || {
                // Ends when the watcher (and with it the sender) is dropped.
                while let Ok(first) = receiver.recv() {
                    let mut paths = first.paths;
                    loop {
                        match receiver.recv_timeout(settle) {
                            Ok(event) => paths.extend(event.paths),
                            Err(mpsc::RecvTimeoutError::Timeout) => break,
                            Err(mpsc::RecvTimeoutError::Disconnected) => return,
                        }
                    }
                    paths.retain(|p| matters(p));
                    paths.sort();
                    paths.dedup();
                    tracing::debug!(changed = paths.len(), "the model folders changed");
                    on_change(paths);
                }
            })
            .map_err(|e| format!("cannot start the folder watcher: {e}"))?;
        Ok(FolderWatcher {
            _watcher: watcher,
            watched,
        })
    }

    /// The folders actually watched.
    pub fn watched(&self) -> &[PathBuf] {
        &self.watched
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_files_presets_and_folders_matter_downloads_in_progress_and_other_files_do_not() {
        for path in [
            "/m/checkpoints/sd_xl_base_1.0.safetensors",
            "/m/flux.GGUF",
            "/m/flux-schnell.preset.json",
            "/m/diffusion_models",
        ] {
            assert!(matters(Path::new(path)), "{path}");
        }
        for path in [
            "/m/flux1-schnell-Q4_0.gguf.part",
            "/m/notes.txt",
            "/m/preview.png",
            "/m/.flux.gguf.swp",
            "/m/settings.json",
        ] {
            assert!(!matters(Path::new(path)), "{path}");
        }
    }
}

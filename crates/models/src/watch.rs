//! Noticing model files that appear, change or go in the model folders, so a listing refreshes on its own: the
//! folders are watched recursively (inotify, FSEvents or ReadDirectoryChangesW through `notify`), and a burst of
//! changes — a 7 GB file being copied in, a ComfyUI tree unpacked — is reported once, after the folders have been
//! quiet for a moment. Downloads in progress (`*.part`) and files of other kinds are not changes to the library.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, CreateKind, EventKind, ModifyKind, RemoveKind};
use notify::{RecommendedWatcher, RecursiveMode, Watcher};

use crate::library::{has_model_extension, preset_name};

/// Watches model folders until dropped.
pub struct FolderWatcher {
    _watcher: RecommendedWatcher,
    watched: Vec<PathBuf>,
}

/// Whether a change of this kind to `path` can change what the library lists: a model file, a preset, or a folder
/// (whose contents come or go with it; model folders are often named like `FLUX.1-dev`, so a name is no guide).
fn matters(path: &Path, kind: &EventKind) -> bool {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    if name.is_empty() || name.starts_with('.') || name.ends_with(".part") {
        return false;
    }
    // What the library lists as a model or a preset.
    if has_model_extension(path) || preset_name(path).is_some() {
        return true;
    }
    match kind {
        // Reading changes nothing; other files closed after writing are not models.
        EventKind::Access(_) => false,
        EventKind::Create(CreateKind::Folder) | EventKind::Remove(RemoveKind::Folder) => true,
        // Something moved or deleted is gone and cannot say whether it was a folder: count it, a rescan is cheap.
        EventKind::Modify(ModifyKind::Name(_)) | EventKind::Remove(_) if !path.exists() => true,
        _ => path.is_dir(),
    }
}

/// The paths of an event that matter to the library.
fn relevant(event: &notify::Event) -> Vec<PathBuf> {
    if matches!(event.kind, EventKind::Access(kind) if kind != AccessKind::Close(AccessMode::Write))
    {
        return Vec::new();
    }
    event
        .paths
        .iter()
        .filter(|p| matters(p, &event.kind))
        .cloned()
        .collect()
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
        let (sender, receiver) = mpsc::channel::<Vec<PathBuf>>();
        let mut watcher =
            notify::recommended_watcher(move |result: notify::Result<notify::Event>| match result
                .map(|e| relevant(&e))
            {
                Ok(paths) if !paths.is_empty() => {
                    let _ = sender.send(paths);
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "watching the model folders"),
            })
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
                while let Ok(mut paths) = receiver.recv() {
                    loop {
                        match receiver.recv_timeout(settle) {
                            Ok(more) => paths.extend(more),
                            Err(mpsc::RecvTimeoutError::Timeout) => break,
                            Err(mpsc::RecvTimeoutError::Disconnected) => return,
                        }
                    }
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
        let root = tempfile::tempdir().unwrap();
        let folder = root.path().join("FLUX.1-dev");
        std::fs::create_dir(&folder).unwrap();
        let written = EventKind::Access(AccessKind::Close(AccessMode::Write));
        let created = EventKind::Create(CreateKind::File);
        let renamed = EventKind::Modify(ModifyKind::Name(notify::event::RenameMode::Any));
        for (path, kind) in [
            (
                Path::new("/m/checkpoints/sd_xl_base_1.0.safetensors"),
                &written,
            ),
            (Path::new("/m/flux.GGUF"), &created),
            (Path::new("/m/flux-schnell.preset.json"), &created),
            (Path::new("/m/presets/flux-schnell.json"), &created),
            (folder.as_path(), &renamed),
            (
                Path::new("/m/SD1.5"),
                &EventKind::Remove(RemoveKind::Folder),
            ),
            (Path::new("/m/moved-away.v2"), &renamed),
        ] {
            assert!(matters(path, kind), "{path:?} {kind:?}");
        }
        for (path, kind) in [
            (Path::new("/m/flux1-schnell-Q4_0.gguf.part"), &created),
            (Path::new("/m/flux1-schnell-Q4_0.gguf.part"), &renamed),
            (Path::new("/m/notes.txt"), &written),
            (Path::new("/m/preview.png"), &created),
            (Path::new("/m/.flux.gguf.swp"), &created),
        ] {
            assert!(!matters(path, kind), "{path:?} {kind:?}");
        }
    }
}

//! Values read from a file (its header's description, its parts), remembered while the file keeps its size and
//! modification time: rescanning big folders and planning every job then cost a `stat` per file, and a changed file
//! is read again.

use std::collections::HashMap;
use std::hash::Hash;
use std::path::Path;
use std::sync::{Mutex, OnceLock};
use std::time::SystemTime;

type Stamp = (u64, Option<SystemTime>);

/// A process-wide cache of values computed from files.
pub(crate) struct FileCache<K, V>(OnceLock<Mutex<HashMap<K, (Stamp, V)>>>);

impl<K: Eq + Hash, V: Clone> FileCache<K, V> {
    pub(crate) const fn new() -> Self {
        FileCache(OnceLock::new())
    }

    /// `compute`'s value for `path` (under `key`), from the cache while the file is unchanged. A file that cannot
    /// be examined is computed every time and never remembered; neither is an error.
    pub(crate) fn get<E>(
        &self,
        path: &Path,
        key: K,
        compute: impl FnOnce() -> Result<V, E>,
    ) -> Result<V, E> {
        let stamp = std::fs::metadata(path)
            .ok()
            .map(|m| (m.len(), m.modified().ok()));
        let map = self.0.get_or_init(Default::default);
        if let Some(stamp) = stamp {
            if let Some((seen, value)) = map.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
                if *seen == stamp {
                    return Ok(value.clone());
                }
            }
        }
        let value = compute()?;
        if let Some(stamp) = stamp {
            map.lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(key, (stamp, value.clone()));
        }
        Ok(value)
    }
}

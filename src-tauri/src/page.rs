//! The window's page outlives a crash of its process. WebKitGTK renders the page in a separate web process; when that
//! process dies (a crash, or the system reclaiming its memory) the window would stay blank until the app is restarted.
//! Instead the page is loaded again and reads its state back from the core, as after any reload: the queue, the
//! running jobs and their progress, settings and the gallery all live in the core, not in the page.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How often a lost page is loaded again: a page that dies at once every time is not reloaded in a loop.
#[derive(Debug)]
pub(crate) struct ReloadBudget {
    window: Duration,
    most: usize,
    recent: VecDeque<Instant>,
}

impl ReloadBudget {
    /// At most three reloads a minute.
    pub(crate) fn new() -> ReloadBudget {
        ReloadBudget {
            window: Duration::from_secs(60),
            most: 3,
            recent: VecDeque::new(),
        }
    }

    /// Whether a page lost at `now` is loaded again (and counts it when it is).
    pub(crate) fn allow(&mut self, now: Instant) -> bool {
        while self
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= self.window)
        {
            self.recent.pop_front();
        }
        if self.recent.len() >= self.most {
            return false;
        }
        self.recent.push_back(now);
        true
    }
}

/// Watches the window's web process and loads the page again when it ends.
#[cfg(target_os = "linux")]
pub(crate) fn reload_when_lost(window: &tauri::WebviewWindow) {
    let watched = window.with_webview(|webview| {
        use webkit2gtk::WebViewExt;
        let budget = std::cell::RefCell::new(ReloadBudget::new());
        webview
            .inner()
            .connect_web_process_terminated(move |view, reason| {
                // Ended on purpose (the window closing), not lost.
                if reason == webkit2gtk::WebProcessTerminationReason::TerminatedByApi {
                    return;
                }
                if budget.borrow_mut().allow(Instant::now()) {
                    tracing::error!(?reason, "the window's page process ended; loading the page again");
                    view.reload();
                } else {
                    tracing::error!(
                        ?reason,
                        "the window's page process ended a fourth time within a minute; not loading it again"
                    );
                }
            });
    });
    if let Err(e) = watched {
        tracing::warn!("cannot watch the window's page process: {e}");
    }
}

/// Other platforms' web views bring their page back themselves.
#[cfg(not(target_os = "linux"))]
pub(crate) fn reload_when_lost(_window: &tauri::WebviewWindow) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_page_is_loaded_again_at_most_three_times_a_minute() {
        let mut budget = ReloadBudget::new();
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        assert!(budget.allow(at(0)));
        assert!(budget.allow(at(10)));
        assert!(budget.allow(at(20)));
        assert!(!budget.allow(at(30)), "a fourth loss within the minute");
        assert!(!budget.allow(at(59)));
        // A minute after the first loss, one reload is free again.
        assert!(budget.allow(at(60)));
        assert!(!budget.allow(at(61)));
        assert!(budget.allow(at(75)));
    }
}

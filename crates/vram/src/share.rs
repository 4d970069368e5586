//! Sharing the GPU with a resident LLM or swapping it out: a job that fits beside the LLMs (its parts offloaded or
//! tiled to a budget if needed) can render without unloading them, which saves the LLM's reload; but offloading
//! slows the render. Per job, the cheaper of the two wins — the render's estimated time beside the LLM against its
//! time with the whole GPU plus the LLM's unload and reload — within what the policy allows.

use crate::config::Policy;

/// What a job would need, and how long it would take, with a given amount of free VRAM (the memory planner's
/// answer for that budget).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fit {
    pub fits: bool,
    pub vram_bytes: f64,
    pub seconds: f64,
}

/// How a diffusion job gets its room.
#[derive(Debug, Clone, PartialEq)]
pub enum Room {
    /// Render beside the resident LLMs within `budget_bytes` of VRAM.
    Share { budget_bytes: f64, why: String },
    /// Unload the LLMs (enough of them for `need_bytes`) and render with the room that frees.
    Swap { need_bytes: f64, why: String },
}

impl Room {
    pub fn why(&self) -> &str {
        match self {
            Room::Share { why, .. } | Room::Swap { why, .. } => why,
        }
    }
}

fn gib(bytes: f64) -> String {
    format!("{:.1} GiB", bytes / f64::from(1u32 << 30))
}

/// Chooses between sharing and swapping. `free_now`: VRAM free for the job with the LLMs resident; `llm_bytes`:
/// what the LLMs hold on the GPU; `swap_seconds`: what unloading and later reloading them costs.
pub fn decide(
    policy: Policy,
    free_now: f64,
    llm_bytes: f64,
    swap_seconds: f64,
    planner: &mut (dyn FnMut(f64) -> Fit + Send),
) -> Room {
    let beside = planner(free_now);
    let whole = planner(free_now + llm_bytes);
    let swap = |why: String| Room::Swap {
        need_bytes: whole.vram_bytes,
        why,
    };
    let share = |why: String| Room::Share {
        budget_bytes: free_now,
        why,
    };
    match policy {
        Policy::Always => swap("policy always: the LLMs leave the GPU for every render".into()),
        Policy::Never => share("policy never: Ollama is left alone".into()),
        _ if !beside.fits => swap(format!(
            "the job does not fit in the {} the LLMs leave free: they are unloaded",
            gib(free_now)
        )),
        Policy::Share => share(format!(
            "sharing the GPU: the job fits in the {} the LLMs leave free (about {})",
            gib(free_now),
            gib(beside.vram_bytes)
        )),
        Policy::Auto if !whole.fits => share(format!(
            "sharing the GPU: the job fits beside the LLMs in {} and would not fit better without them",
            gib(free_now)
        )),
        Policy::Auto => {
            let swapping = whole.seconds + swap_seconds;
            if beside.seconds <= swapping {
                share(format!(
                    "sharing the GPU: the job fits in the {} the LLMs leave free (~{:.1} s) — cheaper than \
                     unloading and reloading them (~{swapping:.1} s)",
                    gib(free_now),
                    beside.seconds
                ))
            } else {
                swap(format!(
                    "unloading the LLMs: the job would take ~{:.1} s squeezed beside them, ~{swapping:.1} s with \
                     the whole GPU including their reload",
                    beside.seconds
                ))
            }
        }
    }
}

/// What unloading and reloading `llm_bytes` of LLMs costs: twice the measured average switch when there is one,
/// else about a second plus reading the weights back at 1.5 GB/s.
pub fn swap_seconds(average_switch_ms: Option<f64>, llm_bytes: f64) -> f64 {
    match average_switch_ms {
        Some(ms) => 2.0 * ms / 1000.0,
        None => 1.0 + llm_bytes / 1.5e9,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: f64 = (1u64 << 30) as f64;

    /// A job needing `need` GiB, slowed by half when it gets less than that and can still offload down to
    /// `least` GiB.
    fn job(need: f64, least: f64, seconds: f64) -> impl FnMut(f64) -> Fit + Send {
        move |free: f64| {
            let free = free / GIB;
            if free >= need {
                Fit {
                    fits: true,
                    vram_bytes: need * GIB,
                    seconds,
                }
            } else if free >= least {
                Fit {
                    fits: true,
                    vram_bytes: free * GIB,
                    seconds: seconds * 1.5,
                }
            } else {
                Fit {
                    fits: false,
                    vram_bytes: least * GIB,
                    seconds: f64::INFINITY,
                }
            }
        }
    }

    #[test]
    fn a_small_job_beside_a_small_llm_shares_and_nothing_is_unloaded() {
        // 8 GiB card, Qwen 1.9 GB resident: 5.6 GiB free; SD 1.5 needs 3.7 GiB.
        let room = decide(
            Policy::Auto,
            5.6 * GIB,
            1.9 * GIB,
            swap_seconds(None, 1.9e9),
            &mut job(3.7, 2.0, 6.0),
        );
        assert!(matches!(room, Room::Share { .. }), "{room:?}");
        let room = decide(
            Policy::Share,
            5.6 * GIB,
            1.9 * GIB,
            2.0,
            &mut job(3.7, 2.0, 6.0),
        );
        assert!(matches!(room, Room::Share { budget_bytes, .. } if budget_bytes == 5.6 * GIB));
    }

    #[test]
    fn flux_beside_a_large_llm_swaps_because_it_does_not_fit() {
        // Qwen 4.7 GB leaves 2.6 GiB; FLUX needs 7 GiB and at least 3.5 GiB offloaded.
        for policy in [Policy::Auto, Policy::Share] {
            let room = decide(policy, 2.6 * GIB, 4.7 * GIB, 4.0, &mut job(7.0, 3.5, 10.0));
            assert!(
                matches!(room, Room::Swap { need_bytes, .. } if need_bytes == 7.0 * GIB),
                "{room:?}"
            );
            assert!(room.why().contains("does not fit"));
        }
    }

    #[test]
    fn auto_swaps_when_squeezing_costs_more_than_the_llms_reload() {
        // It fits beside the LLM only badly (1.5x slower on a 60 s render) while a reload costs 4 s.
        let room = decide(
            Policy::Auto,
            3.0 * GIB,
            4.0 * GIB,
            4.0,
            &mut job(5.0, 2.0, 60.0),
        );
        assert!(matches!(room, Room::Swap { .. }), "{room:?}");
        // On a 2 s render the reload is what costs more.
        let room = decide(
            Policy::Auto,
            3.0 * GIB,
            4.0 * GIB,
            4.0,
            &mut job(5.0, 2.0, 2.0),
        );
        assert!(matches!(room, Room::Share { .. }), "{room:?}");
    }

    #[test]
    fn always_swaps_and_never_shares_whatever_fits() {
        let room = decide(
            Policy::Always,
            7.0 * GIB,
            1.0 * GIB,
            2.0,
            &mut job(1.0, 1.0, 1.0),
        );
        assert!(matches!(room, Room::Swap { .. }));
        let room = decide(
            Policy::Never,
            0.5 * GIB,
            7.0 * GIB,
            2.0,
            &mut job(7.0, 3.0, 1.0),
        );
        assert!(matches!(room, Room::Share { .. }));
    }
}

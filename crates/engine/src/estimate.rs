//! Overall percent and ETA from measured times only.
//!
//! Within a job the sampling rate is measured step by step; across jobs the supervisor remembers how long each
//! model took to load, encode, sample and decode, scaled by image area. Where nothing has been measured yet the
//! estimate is `None` rather than a guess, and the reported percent never goes backwards.

use std::collections::HashMap;
use std::time::Instant;

use crate::events::Stage;

#[derive(Debug, Clone, Copy, Default)]
struct History {
    load_seconds: f64,
    encode_seconds: f64,
    step_seconds_per_megapixel: f64,
    decode_seconds_per_megapixel: f64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Loading,
    Encoding,
    Sampling,
    Decoding,
}

#[derive(Debug)]
struct Job {
    model: String,
    steps: u32,
    images: u32,
    megapixels: f64,
    started: Instant,
    phase: Option<(Phase, Instant)>,
    spent: HashMap<&'static str, f64>,
    sampled_steps: u32,
    sampling_seconds: f64,
    percent: Option<f64>,
}

/// Remembers per-model timings and estimates the job under way.
#[derive(Debug, Default)]
pub struct Estimator {
    history: HashMap<String, History>,
    job: Option<Job>,
}

fn key(phase: Phase) -> &'static str {
    match phase {
        Phase::Loading => "load",
        Phase::Encoding => "encode",
        Phase::Sampling => "sample",
        Phase::Decoding => "decode",
    }
}

/// Percent and ETA of an upscale job from its tiles: the share of tiles done over every pass and image, and the
/// time they took.
#[derive(Debug, Default)]
pub struct TileClock {
    since: Option<Instant>,
    percent: Option<f64>,
}

impl TileClock {
    /// Folds in a stage and returns `(percent, eta_seconds)`.
    pub fn observe(&mut self, stage: &Stage, now: Instant) -> (Option<f64>, Option<f64>) {
        let Stage::Upscaling {
            image,
            images,
            pass,
            passes,
            tile,
            tiles,
        } = *stage
        else {
            return (self.percent, None);
        };
        let since = *self.since.get_or_insert(now);
        let in_pass = if tiles == 0 {
            0.0
        } else {
            f64::from(tile) / f64::from(tiles)
        };
        let in_image = (f64::from(pass.max(1) - 1) + in_pass) / f64::from(passes.max(1));
        let done = (f64::from(image.max(1) - 1) + in_image) / f64::from(images.max(1));
        if done <= 0.0 {
            return (self.percent, None);
        }
        let percent = (done * 100.0).min(99.0);
        self.percent = Some(self.percent.map_or(percent, |p| p.max(percent)));
        let elapsed = now.duration_since(since).as_secs_f64();
        (self.percent, Some(elapsed * (1.0 - done) / done))
    }
}

impl Estimator {
    /// Starts timing a job.
    pub fn start(
        &mut self,
        model: &str,
        steps: u32,
        images: u32,
        width: u32,
        height: u32,
        started: Instant,
    ) {
        self.job = Some(Job {
            model: model.to_string(),
            steps,
            images,
            megapixels: f64::from(width) * f64::from(height) / 1e6,
            started,
            phase: None,
            spent: HashMap::new(),
            sampled_steps: 0,
            sampling_seconds: 0.0,
            percent: None,
        });
    }

    /// Folds in a stage and returns `(percent, eta_seconds)`.
    pub fn observe(&mut self, stage: &Stage, now: Instant) -> (Option<f64>, Option<f64>) {
        let history = self
            .job
            .as_ref()
            .and_then(|j| self.history.get(&j.model).copied());
        let Some(job) = self.job.as_mut() else {
            return (None, None);
        };
        let phase = match stage {
            Stage::LoadingModel { .. } => Phase::Loading,
            Stage::EncodingPrompt => Phase::Encoding,
            Stage::Sampling { .. } | Stage::Preview { .. } => Phase::Sampling,
            Stage::Decoding => Phase::Decoding,
            // Queue and final stages are reported by the job around the engine, not timed here.
            _ => return (job.percent, None),
        };
        if job.phase.map(|(p, _)| p) != Some(phase) {
            if let Some((previous, since)) = job.phase {
                *job.spent.entry(key(previous)).or_default() +=
                    now.duration_since(since).as_secs_f64();
            }
            job.phase = Some((phase, now));
        }
        if let Stage::Sampling {
            step,
            steps,
            image,
            seconds_per_step: Some(seconds),
            ..
        } = stage
        {
            job.steps = *steps;
            job.images = job.images.max(*image);
            job.sampled_steps += 1;
            job.sampling_seconds += seconds;
            let _ = step;
        }
        let elapsed = now.duration_since(job.started).as_secs_f64();
        let remaining = remaining(job, stage, history, now);
        let estimate = remaining.map(|r| (100.0 * elapsed / (elapsed + r).max(1e-9), r));
        if let Some((percent, _)) = estimate {
            job.percent = Some(
                job.percent
                    .map_or(percent, |p: f64| p.max(percent))
                    .min(99.0),
            );
        }
        (job.percent, estimate.map(|(_, r)| r))
    }

    /// How long a job would take by the model's measured history (`None` before the model has run here): its load
    /// unless `resident`, the prompt's encoding, `steps` for each of `images` at `width`×`height`, and decoding.
    pub fn predict(
        &self,
        model: &str,
        steps: u32,
        images: u32,
        width: u32,
        height: u32,
        resident: bool,
    ) -> Option<f64> {
        let h = self.history.get(model)?;
        let megapixels = f64::from(width) * f64::from(height) / 1e6;
        let images = f64::from(images.max(1));
        Some(
            if resident { 0.0 } else { h.load_seconds }
                + h.encode_seconds
                + f64::from(steps) * images * h.step_seconds_per_megapixel * megapixels
                + h.decode_seconds_per_megapixel * megapixels * images,
        )
    }

    /// Ends the job; a successful one updates the model's history.
    pub fn finish(&mut self, succeeded: bool, now: Instant) {
        let Some(mut job) = self.job.take() else {
            return;
        };
        if !succeeded {
            return;
        }
        if let Some((phase, since)) = job.phase {
            *job.spent.entry(key(phase)).or_default() += now.duration_since(since).as_secs_f64();
        }
        let previous = self.history.get(&job.model).copied().unwrap_or_default();
        let mp = job.megapixels.max(1e-6);
        let images = f64::from(job.images.max(1));
        let step_seconds = if job.sampled_steps > 0 {
            job.sampling_seconds / f64::from(job.sampled_steps) / mp
        } else {
            previous.step_seconds_per_megapixel
        };
        let load = job.spent.get("load").copied().unwrap_or(0.0);
        self.history.insert(
            job.model,
            History {
                // A warm job loads nothing: keep the last cold load time for the next cold start.
                load_seconds: if load > 0.0 {
                    load
                } else {
                    previous.load_seconds
                },
                encode_seconds: job
                    .spent
                    .get("encode")
                    .copied()
                    .unwrap_or(previous.encode_seconds),
                step_seconds_per_megapixel: step_seconds,
                decode_seconds_per_megapixel: job
                    .spent
                    .get("decode")
                    .map_or(previous.decode_seconds_per_megapixel, |d| d / images / mp),
            },
        );
    }
}

fn remaining(job: &Job, stage: &Stage, history: Option<History>, now: Instant) -> Option<f64> {
    let in_phase = job
        .phase
        .map_or(0.0, |(_, since)| now.duration_since(since).as_secs_f64());
    let total_steps = f64::from(job.steps) * f64::from(job.images);
    let decode =
        history.map(|h| h.decode_seconds_per_megapixel * job.megapixels * f64::from(job.images));
    let measured_step =
        (job.sampled_steps > 0).then(|| job.sampling_seconds / f64::from(job.sampled_steps));
    let step = measured_step.or(history.map(|h| h.step_seconds_per_megapixel * job.megapixels))?;
    match stage {
        Stage::Sampling {
            image, step: done, ..
        } => {
            let finished =
                f64::from(image.saturating_sub(1)) * f64::from(job.steps) + f64::from(*done);
            Some((total_steps - finished).max(0.0) * step + decode.unwrap_or(0.0))
        }
        Stage::Decoding => decode.map(|d| (d - in_phase).max(0.0)),
        Stage::EncodingPrompt => {
            let h = history?;
            Some(
                (h.encode_seconds - in_phase).max(0.0) + total_steps * step + decode.unwrap_or(0.0),
            )
        }
        Stage::LoadingModel { .. } => {
            let h = history?;
            let loaded = job.spent.get("load").copied().unwrap_or(0.0) + in_phase;
            Some(
                (h.load_seconds - loaded).max(0.0)
                    + h.encode_seconds
                    + total_steps * step
                    + decode.unwrap_or(0.0),
            )
        }
        // Previews, and the stages reported around the engine, carry no estimate of their own.
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn sampling(step: u32, seconds: f64) -> Stage {
        Stage::Sampling {
            image: 1,
            images: 1,
            step,
            steps: 4,
            seconds_per_step: Some(seconds),
            pass: 1,
            passes: 1,
        }
    }

    #[test]
    fn a_job_is_predicted_from_its_models_history_with_the_load_only_when_not_resident() {
        let t0 = Instant::now();
        let mut e = Estimator::default();
        assert_eq!(
            e.predict("m", 4, 1, 1000, 1000, false),
            None,
            "nothing measured yet"
        );
        e.start("m", 4, 1, 1000, 1000, t0);
        let loading = Stage::LoadingModel {
            part: 1,
            tensors_loaded: 0,
            tensors_total: 10,
        };
        e.observe(&loading, t0);
        e.observe(&Stage::EncodingPrompt, t0 + Duration::from_secs(3));
        for step in 1..=4 {
            e.observe(
                &sampling(step, 2.0),
                t0 + Duration::from_secs(4 + 2 * u64::from(step)),
            );
        }
        e.observe(&Stage::Decoding, t0 + Duration::from_secs(12));
        e.finish(true, t0 + Duration::from_secs(13));
        // Load 3 s, encode 3 s (until the first step), 2 s a step at one megapixel, decode 1 s.
        let cold = e.predict("m", 4, 1, 1000, 1000, false).unwrap();
        assert!((cold - (3.0 + 3.0 + 8.0 + 1.0)).abs() < 1e-6, "{cold}");
        let warm = e.predict("m", 8, 1, 1000, 1000, true).unwrap();
        assert!((warm - (3.0 + 16.0 + 1.0)).abs() < 1e-6, "{warm}");
        assert_eq!(e.predict("other", 4, 1, 1000, 1000, true), None);
    }

    #[test]
    fn a_first_job_has_no_estimate_until_a_step_is_measured_then_extrapolates_it() {
        let t0 = Instant::now();
        let mut e = Estimator::default();
        e.start("m", 4, 1, 64, 64, t0);
        assert_eq!(
            e.observe(&Stage::EncodingPrompt, t0 + Duration::from_secs(1)),
            (None, None)
        );
        let (percent, eta) = e.observe(&sampling(1, 2.0), t0 + Duration::from_secs(3));
        // 3 steps left at the measured 2 s each; nothing known about decoding yet.
        assert_eq!(eta, Some(6.0));
        assert!((percent.unwrap() - 100.0 * 3.0 / 9.0).abs() < 1e-9);
    }

    #[test]
    fn a_second_job_is_estimated_from_the_first_before_it_samples() {
        let t0 = Instant::now();
        let mut e = Estimator::default();
        e.start("m", 4, 1, 64, 64, t0);
        e.observe(&Stage::EncodingPrompt, t0);
        for step in 1..=4 {
            e.observe(
                &sampling(step, 1.0),
                t0 + Duration::from_secs(u64::from(step)),
            );
        }
        e.observe(&Stage::Decoding, t0 + Duration::from_secs(4));
        e.finish(true, t0 + Duration::from_secs(5));

        let t1 = t0 + Duration::from_secs(10);
        e.start("m", 4, 1, 64, 64, t1);
        let (_, eta) = e.observe(&Stage::EncodingPrompt, t1);
        // Encoding took 1 s, 4 steps at 1 s each, decoding 1 s.
        let eta = eta.unwrap();
        assert!((eta - 6.0).abs() < 0.01, "{eta}");
    }
}

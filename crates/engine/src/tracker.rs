//! Turns sd.cpp's two process-global signals — log lines and the `(step, steps, time)` progress callback — into
//! typed stages.
//!
//! sd.cpp fires the progress callback both while loading tensors and for sampling steps, and it loads weights lazily
//! in parts (text encoder before encoding, diffusion model after sampling has begun, VAE before decoding). Its
//! `loading N/M tensors` / `loading tensors completed` log lines bracket every load, so a callback inside that
//! bracket is a loading count and never a step.

use std::time::Instant;

use crate::events::Stage;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Idle,
    Encoding,
    Sampling {
        image: u32,
        images: u32,
    },
    Decoding,
    /// `convert`: every progress callback is reading (and converting) the model.
    Converting,
    /// Enlarging an image: progress callbacks count tiles.
    Upscaling {
        image: u32,
        images: u32,
        pass: u32,
        passes: u32,
    },
}

/// The per-job state machine. Feed it every log line and progress callback; it returns the stages to report.
#[derive(Debug)]
pub struct Tracker {
    phase: Phase,
    /// Tensors in the load under way, while one is.
    loading: Option<u32>,
    loads: u32,
    last_loaded: u32,
    steps: u32,
    last_step: u32,
    step_clock: Option<Instant>,
    /// The hires pass's steps (0: no hires pass). Its steps are reported after the first pass's, out of both.
    hires_steps: u32,
    /// The first pass's steps once the hires pass has begun.
    hires_offset: Option<u32>,
    /// The image the hires pass is on, and of how many.
    hires_image: (u32, u32),
}

impl Default for Tracker {
    fn default() -> Self {
        Tracker {
            phase: Phase::Idle,
            loading: None,
            loads: 0,
            last_loaded: 0,
            steps: 0,
            last_step: 0,
            step_clock: None,
            hires_steps: 0,
            hires_offset: None,
            hires_image: (1, 1),
        }
    }
}

fn parse_pair(text: &str, after: &str) -> Option<(u32, u32)> {
    let start = text.find(after)? + after.len();
    let rest = text[start..].trim_start();
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '/'))
        .unwrap_or(rest.len());
    let (a, b) = rest[..end].split_once('/')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

impl Tracker {
    /// Starts a job of `steps` sampling steps per image, then `hires_steps` more per image in a hires pass (0: none).
    pub fn begin(&mut self, steps: u32, hires_steps: u32) -> Vec<Stage> {
        *self = Tracker {
            steps: steps + hires_steps,
            phase: Phase::Encoding,
            hires_steps,
            ..Tracker::default()
        };
        Vec::new()
    }

    /// Starts a conversion: progress callbacks report how much of the model has been read.
    pub fn begin_convert(&mut self) {
        *self = Tracker {
            phase: Phase::Converting,
            loads: 1,
            ..Tracker::default()
        };
    }

    /// Pass `pass` of `passes` over image `image` of `images` begins: progress callbacks count its tiles, except
    /// inside a load of the model's weights (sd.cpp reads them on the first tile), which counts tensors.
    pub fn begin_upscale_pass(&mut self, image: u32, images: u32, pass: u32, passes: u32) {
        self.phase = Phase::Upscaling {
            image,
            images,
            pass,
            passes,
        };
        self.last_step = 0;
    }

    /// The tiles the current upscaling pass has reported done.
    pub fn tiles_done(&self) -> u32 {
        self.last_step
    }

    fn current(&self) -> Option<Stage> {
        match self.phase {
            Phase::Idle | Phase::Converting | Phase::Upscaling { .. } => None,
            Phase::Encoding => Some(Stage::EncodingPrompt),
            Phase::Sampling { image, images } => Some(Stage::Sampling {
                image,
                images,
                step: self.hires_offset.unwrap_or(0) + self.last_step,
                steps: self.steps,
                seconds_per_step: None,
                pass: self.pass(),
                passes: self.passes(),
            }),
            Phase::Decoding => Some(Stage::Decoding),
        }
    }

    /// Called for every sd.cpp log line (all levels).
    pub fn on_log(&mut self, text: &str) -> Vec<Stage> {
        if matches!(self.phase, Phase::Idle | Phase::Converting) {
            return Vec::new();
        }
        if text.contains(" tensors from ") {
            if let Some((count, _of_all)) = parse_pair(text, "loading ") {
                self.loading = Some(count);
                self.loads += 1;
                self.last_loaded = 0;
                return vec![Stage::LoadingModel {
                    part: self.loads,
                    tensors_loaded: 0,
                    tensors_total: count,
                }];
            }
        }
        if text.contains("loading tensors completed") {
            self.loading = None;
            if matches!(self.phase, Phase::Upscaling { .. }) {
                return Vec::new();
            }
            // Time spent loading is not sampling time.
            if self.step_clock.is_some() {
                self.step_clock = Some(Instant::now());
            }
            return self.current().into_iter().collect();
        }
        if let Some((image, images)) = parse_pair(text, "generating image:") {
            self.phase = Phase::Sampling { image, images };
            self.last_step = 0;
            self.step_clock = Some(Instant::now());
            return self.current().into_iter().collect();
        }
        // The hires pass: every image again, its steps counted after the first pass's.
        if text.contains("hires fix: upscaling to") && self.hires_steps > 0 {
            let images = match self.phase {
                Phase::Sampling { images, .. } => images,
                _ => 1,
            };
            self.hires_offset = Some(self.steps - self.hires_steps);
            self.hires_image = (1, images);
            self.phase = Phase::Sampling { image: 1, images };
            self.last_step = 0;
            self.step_clock = Some(Instant::now());
            return Vec::new();
        }
        if let (Some((done, images)), Some(_)) =
            (parse_pair(text, "hires sampling"), self.hires_offset)
        {
            if done < images {
                self.hires_image = (done + 1, images);
                self.phase = Phase::Sampling {
                    image: done + 1,
                    images,
                };
                self.last_step = 0;
            }
            return Vec::new();
        }
        if text.contains("decoding ") && text.contains(" latents") {
            self.phase = Phase::Decoding;
            return vec![Stage::Decoding];
        }
        Vec::new()
    }

    /// Called for every progress callback.
    pub fn on_progress(&mut self, step: i32, steps: i32) -> Vec<Stage> {
        let (Ok(step), Ok(steps)) = (u32::try_from(step), u32::try_from(steps)) else {
            return Vec::new();
        };
        if self.phase == Phase::Converting {
            if step <= self.last_loaded || step > steps {
                return Vec::new();
            }
            self.last_loaded = step;
            return vec![Stage::LoadingModel {
                part: 1,
                tensors_loaded: step,
                tensors_total: steps,
            }];
        }
        if let Some(total) = self.loading {
            if step > self.last_loaded && steps == total {
                self.last_loaded = step;
                return vec![Stage::LoadingModel {
                    part: self.loads,
                    tensors_loaded: step,
                    tensors_total: total,
                }];
            }
            return Vec::new();
        }
        if let Phase::Upscaling {
            image,
            images,
            pass,
            passes,
        } = self.phase
        {
            // Tile 0 announces the pass; later tiles only count forward.
            if (step <= self.last_step && step > 0) || step > steps {
                return Vec::new();
            }
            self.last_step = step;
            return vec![Stage::Upscaling {
                image,
                images,
                pass,
                passes,
                tile: step,
                tiles: steps,
            }];
        }
        // A pixel-space hires upscale decodes the first pass in between: its steps are sampling again.
        if let (Phase::Decoding, Some(_)) = (self.phase, self.hires_offset) {
            let (image, images) = self.hires_image;
            self.phase = Phase::Sampling { image, images };
        }
        let Phase::Sampling { image, images } = self.phase else {
            return Vec::new();
        };
        if step == 0 || step <= self.last_step || step > steps {
            return Vec::new();
        }
        let raw_step = step;
        let (step, steps) = match self.hires_offset {
            // The hires pass: after the first pass's steps, out of both.
            Some(offset) => (offset + step, offset + steps),
            // img2img runs fewer steps than asked (strength): trust sd.cpp's count.
            None => (step, steps + self.hires_steps),
        };
        self.steps = steps;
        let now = Instant::now();
        let elapsed = self.step_clock.map(|t| now.duration_since(t).as_secs_f64());
        let seconds_per_step = elapsed.map(|e| e / f64::from(raw_step - self.last_step));
        self.step_clock = Some(now);
        self.last_step = raw_step;
        vec![Stage::Sampling {
            image,
            images,
            step,
            steps,
            seconds_per_step,
            pass: self.pass(),
            passes: self.passes(),
        }]
    }

    /// The pass under way: 2 once a hires pass has begun.
    fn pass(&self) -> u32 {
        if self.hires_offset.is_some() {
            2
        } else {
            1
        }
    }

    /// 2 with a hires pass, else 1.
    fn passes(&self) -> u32 {
        if self.hires_steps > 0 {
            2
        } else {
            1
        }
    }

    /// The 1-based index of the image being sampled (1 outside sampling).
    pub fn image(&self) -> u32 {
        match self.phase {
            Phase::Sampling { image, .. } => image,
            _ => 1,
        }
    }

    /// Ends the job.
    pub fn finish(&mut self) {
        self.phase = Phase::Idle;
        self.loading = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phases(stages: &[Stage]) -> Vec<String> {
        stages
            .iter()
            .map(|s| match s {
                Stage::LoadingModel {
                    tensors_loaded,
                    tensors_total,
                    ..
                } => {
                    format!("load {tensors_loaded}/{tensors_total}")
                }
                Stage::Sampling {
                    step,
                    steps,
                    pass,
                    passes,
                    ..
                } if *passes > 1 => format!("pass {pass}/{passes} step {step}/{steps}"),
                Stage::Sampling { step, steps, .. } => format!("step {step}/{steps}"),
                Stage::EncodingPrompt => "encode".into(),
                Stage::Decoding => "decode".into(),
                Stage::Upscaling {
                    pass,
                    passes,
                    tile,
                    tiles,
                    ..
                } => format!("pass {pass}/{passes} tile {tile}/{tiles}"),
                other => other.name().into(),
            })
            .collect()
    }

    #[test]
    fn an_upscalers_weights_loading_on_its_first_tile_are_counted_as_loading_and_tiles_as_tiles() {
        // The order sd.cpp produces for a tiled ESRGAN pass on a cold model (observed with the test upscaler).
        let mut t = Tracker::default();
        t.begin_upscale_pass(1, 1, 1, 2);
        let mut out = t.on_progress(0, 9);
        out.extend(t.on_log("loading 42/42 tensors from /x4.gguf"));
        out.extend(t.on_progress(0, 42));
        out.extend(t.on_progress(42, 42));
        out.extend(t.on_log("loading tensors completed, taking 0.01s"));
        out.extend(t.on_progress(1, 9));
        out.extend(t.on_progress(9, 9));
        assert_eq!(t.tiles_done(), 9);
        t.begin_upscale_pass(1, 1, 2, 2);
        assert_eq!(t.tiles_done(), 0);
        out.extend(t.on_progress(0, 121));
        out.extend(t.on_progress(1, 121));
        out.extend(t.on_progress(1, 121));
        assert_eq!(
            phases(&out),
            [
                "pass 1/2 tile 0/9",
                "load 0/42",
                "load 42/42",
                "pass 1/2 tile 1/9",
                "pass 1/2 tile 9/9",
                "pass 2/2 tile 0/121",
                "pass 2/2 tile 1/121",
            ]
        );
    }

    #[test]
    fn lazy_loading_inside_sampling_is_reported_as_loading_not_as_steps() {
        // The order sd.cpp really produces on a cold first job (observed with the test model).
        let mut t = Tracker::default();
        let mut out = t.begin(2, 0);
        out.extend(t.on_log("loading 196/610 tensors from /m.gguf"));
        out.extend(t.on_progress(0, 196));
        out.extend(t.on_progress(196, 196));
        out.extend(t.on_log("loading tensors completed, taking 0.20s"));
        out.extend(t.on_log("get_learned_condition completed, taking 0.71s"));
        out.extend(t.on_log("generating image: 1/1 - seed 1"));
        out.extend(t.on_progress(0, 2));
        out.extend(t.on_log("loading 280/610 tensors from /m.gguf"));
        out.extend(t.on_progress(0, 280));
        out.extend(t.on_progress(2, 280));
        out.extend(t.on_progress(280, 280));
        out.extend(t.on_log("loading tensors completed, taking 0.62s"));
        out.extend(t.on_progress(1, 2));
        out.extend(t.on_progress(2, 2));
        out.extend(t.on_log("sampling completed, taking 1.20s"));
        out.extend(t.on_log("decoding 1 latents"));
        out.extend(t.on_log("loading 67/610 tensors from /m.gguf"));
        out.extend(t.on_progress(67, 67));
        out.extend(t.on_log("loading tensors completed"));
        assert_eq!(
            phases(&out),
            [
                "load 0/196",
                "load 196/196",
                "encode",
                "step 0/2",
                "load 0/280",
                "load 2/280",
                "load 280/280",
                "step 0/2",
                "step 1/2",
                "step 2/2",
                "decode",
                "load 0/67",
                "load 67/67",
                "decode"
            ]
        );
    }

    #[test]
    fn a_repeated_or_out_of_range_step_is_not_reported_twice() {
        let mut t = Tracker::default();
        t.begin(3, 0);
        t.on_log("generating image: 1/1 - seed 5");
        assert_eq!(t.on_progress(1, 3).len(), 1);
        assert!(t.on_progress(1, 3).is_empty());
        assert!(t.on_progress(4, 3).is_empty());
    }
}

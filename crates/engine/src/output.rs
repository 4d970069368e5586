//! Writes finished images as PNG files that carry their parameters twice: A1111's `parameters` text (read by
//! A1111, Forge, InvokeAI, Civitai and most galleries) and DiffuGen's full JSON record (`diffugen`), so a gallery can
//! be rebuilt from the files alone. Files appear atomically: written to a temporary name, then linked into place.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::params::JobSpec;

/// The PNG text key of DiffuGen's JSON record.
pub const RECORD_KEY: &str = "diffugen";
/// The PNG text key A1111 uses.
pub const PARAMETERS_KEY: &str = "parameters";

/// Everything needed to reproduce one image, as stored in its PNG.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub app: String,
    pub job_id: String,
    /// Unix time in seconds.
    pub created: f64,
    pub prompt: String,
    pub negative_prompt: String,
    pub model: String,
    pub family: diffugen_models::Family,
    pub width: u32,
    pub height: u32,
    pub steps: u32,
    pub cfg_scale: f32,
    pub sampler: String,
    pub scheduler: Option<String>,
    pub seed: i64,
    pub batch_index: u32,
    pub clip_skip: i32,
    pub loras: Vec<RecordLora>,
    pub init_image: Option<String>,
    pub mask: Option<String>,
    pub strength: Option<f32>,
    pub generation_seconds: f64,
    /// The memory and speed options asked for (request, model card, settings).
    #[serde(
        default,
        skip_serializing_if = "diffugen_models::MemoryOptions::is_empty"
    )]
    pub memory: diffugen_models::MemoryOptions,
    /// What the job ran with: the planner's placement, tiling, budget and estimated peaks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    /// The step cache sd.cpp ran (`ucache`/`easycache` and its threshold).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_cache: Option<diffugen_models::StepCache>,
    /// The hires pass (the image is its size; `width`/`height` are the first pass's, as A1111 writes them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hires: Option<crate::params::HiresSpec>,
    /// The textual-inversion embeddings the prompts used, by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub embeddings: Vec<String>,
    /// The ControlNet that steered the render.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control: Option<ControlRecord>,
    /// How the image was enlarged after it was made (`width`/`height` stay the generation's, as for hires).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upscale: Option<crate::upscale::UpscaleRecord>,
    /// The prompt as the user wrote it, when the prompt assistant rewrote it (`prompt` is the rewrite rendered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_prompt: Option<String>,
    /// Who asked (`app`, `api`, `openai`, `a1111-txt2img`, `cli`, `mcp`, ...), when the queue said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// Seconds from the job's acceptance to its render's start: the wait in the queue and for the GPU
    /// (`generation_seconds` does not count it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_seconds: Option<f64>,
}

/// A ControlNet as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlRecord {
    pub model: String,
    pub module: crate::control::ControlModule,
    pub strength: f32,
    /// The control map the render used (after the preprocessor), kept in the inputs folder for a remix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

/// A LoRA as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordLora {
    pub name: String,
    pub weight: f32,
}

impl Record {
    pub fn new(
        spec: &JobSpec,
        job_id: &str,
        batch_index: u32,
        created: f64,
        generation_seconds: f64,
    ) -> Record {
        Record {
            app: format!("DiffuGen {}", env!("CARGO_PKG_VERSION")),
            job_id: job_id.to_string(),
            created,
            prompt: spec.prompt.clone(),
            negative_prompt: spec.negative_prompt.clone(),
            model: spec.model_id.clone(),
            family: spec.family,
            width: spec.width,
            height: spec.height,
            steps: spec.steps,
            cfg_scale: spec.cfg_scale,
            sampler: spec.sampler.clone(),
            scheduler: spec.scheduler.clone(),
            seed: spec.seed + i64::from(batch_index),
            batch_index,
            clip_skip: spec.clip_skip,
            loras: spec
                .loras
                .iter()
                .map(|l| RecordLora {
                    name: l.name.clone(),
                    weight: l.weight,
                })
                .collect(),
            init_image: spec.init_image_source.clone(),
            mask: spec.mask_source.clone(),
            strength: spec.strength,
            generation_seconds,
            memory: spec.memory.options.clone(),
            plan: spec.memory.plan.as_ref().map(|p| p.summary()),
            step_cache: spec.memory.cache,
            hires: spec
                .hires
                .as_ref()
                .map(crate::params::HiresSpec::for_record),
            embeddings: spec.embeddings.iter().map(|e| e.name.clone()).collect(),
            control: spec.control.as_ref().map(|c| ControlRecord {
                model: c.model.clone(),
                module: c.module,
                strength: c.strength,
                image: None,
            }),
            upscale: None,
            original_prompt: spec.original_prompt.clone(),
            client: spec.client.clone(),
            queue_seconds: None,
        }
    }

    /// The record of an upscaled image: the source's own record (prompt, seed, parameters) when it had one, with
    /// how it was enlarged; else a record of the upscale alone (no generation parameters, an empty `model`).
    pub fn upscaled(
        origin: Option<&Record>,
        job_id: &str,
        created: f64,
        seconds: f64,
        upscale: crate::upscale::UpscaleRecord,
    ) -> Record {
        let mut record = origin.cloned().unwrap_or_else(|| Record {
            app: String::new(),
            job_id: String::new(),
            created,
            prompt: String::new(),
            negative_prompt: String::new(),
            model: String::new(),
            family: diffugen_models::Family::Unknown,
            width: upscale.source_width,
            height: upscale.source_height,
            steps: 0,
            cfg_scale: 0.0,
            sampler: String::new(),
            scheduler: None,
            seed: -1,
            batch_index: 0,
            clip_skip: 0,
            loras: Vec::new(),
            init_image: None,
            mask: None,
            strength: None,
            generation_seconds: 0.0,
            memory: Default::default(),
            plan: None,
            step_cache: None,
            hires: None,
            embeddings: Vec::new(),
            control: None,
            upscale: None,
            original_prompt: None,
            client: None,
            queue_seconds: None,
        });
        record.app = format!("DiffuGen {}", env!("CARGO_PKG_VERSION"));
        record.job_id = job_id.to_string();
        record.created = created;
        record.generation_seconds = seconds;
        record.upscale = Some(upscale);
        record
    }

    /// Whether the record holds a generation's parameters (not an upscale of an image from elsewhere).
    pub fn is_generated(&self) -> bool {
        !(self.upscale.is_some() && self.model.is_empty())
    }

    /// The A1111 `parameters` text.
    pub fn a1111_parameters(&self) -> String {
        let postprocess = self.upscale.as_ref().map(|u| {
            format!(
                "Postprocess upscale by: {}, Postprocess upscaler: {}",
                u.scale, u.upscaler
            )
        });
        if !self.is_generated() {
            return format!("{}, Version: {}", postprocess.unwrap_or_default(), self.app);
        }
        let mut text = self.prompt.clone();
        if !self.negative_prompt.is_empty() {
            text.push_str(&format!("\nNegative prompt: {}", self.negative_prompt));
        }
        let mut fields = vec![
            format!("Steps: {}", self.steps),
            format!("Sampler: {}", crate::a1111::sampler_display(&self.sampler)),
        ];
        if let Some(scheduler) = &self.scheduler {
            fields.push(format!(
                "Schedule type: {}",
                crate::a1111::scheduler_display(scheduler)
            ));
        }
        fields.push(format!("CFG scale: {}", self.cfg_scale));
        fields.push(format!("Seed: {}", self.seed));
        fields.push(format!("Size: {}x{}", self.width, self.height));
        fields.push(format!("Model: {}", self.model));
        if let Some(strength) = self.strength {
            fields.push(format!("Denoising strength: {strength}"));
        }
        if let Some(hires) = &self.hires {
            fields.push(format!("Denoising strength: {}", hires.denoising_strength));
            if hires.width == (self.width as f32 * hires.scale).round() as u32 {
                fields.push(format!("Hires upscale: {}", hires.scale));
            } else {
                fields.push(format!("Hires resize: {}x{}", hires.width, hires.height));
            }
            fields.push(format!("Hires steps: {}", hires.steps));
            fields.push(format!("Hires upscaler: {}", hires.upscaler_name()));
        }
        if self.clip_skip > 0 {
            fields.push(format!("Clip skip: {}", self.clip_skip));
        }
        if !self.loras.is_empty() {
            let loras: Vec<String> = self
                .loras
                .iter()
                .map(|l| format!("{}: {}", l.name, l.weight))
                .collect();
            fields.push(format!("Lora weights: \"{}\"", loras.join(", ")));
        }
        if let Some(control) = &self.control {
            // As sd-webui-controlnet writes it.
            fields.push(format!(
                "ControlNet 0: \"Module: {}, Model: {}, Weight: {}\"",
                control.module.name(),
                control.model,
                control.strength
            ));
        }
        fields.extend(postprocess);
        fields.push(format!("Version: {}", self.app));
        text.push('\n');
        text.push_str(&fields.join(", "));
        text
    }
}

/// Encodes `image` as PNG, with the parameters text and the JSON record when `record` is given.
pub fn encode_png(image: &diffugen_sd::RgbImage, record: Option<&Record>) -> io::Result<Vec<u8>> {
    let pixels = diffugen_pngtext::Pixels {
        width: image.width,
        height: image.height,
        channels: image.channels,
        data: &image.data,
    };
    let Some(record) = record else {
        return diffugen_pngtext::encode(pixels, &[]);
    };
    let parameters = record.a1111_parameters();
    let json = serde_json::to_string(record).map_err(io::Error::other)?;
    // tEXt is Latin-1; A1111 readers also read iTXt, which holds any UTF-8 prompt.
    diffugen_pngtext::encode(
        pixels,
        &[
            diffugen_pngtext::Text::Plain {
                key: PARAMETERS_KEY,
                text: &parameters,
            },
            diffugen_pngtext::Text::Utf8 {
                key: RECORD_KEY,
                text: &json,
            },
        ],
    )
}

pub use diffugen_pngtext::read as read_png_text;

/// Where a job's images go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Destination {
    /// Readable, collision-free names in this folder.
    Folder(PathBuf),
    /// This exact file (replaced if it exists); a batch gets `-2`, `-3`, ... before the extension.
    File(PathBuf),
}

fn slug(prompt: &str) -> String {
    let mut slug = String::new();
    for word in prompt
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        if slug.len() + word.len() > 40 {
            break;
        }
        if !slug.is_empty() {
            slug.push('-');
        }
        slug.push_str(&word.to_lowercase());
    }
    if slug.is_empty() {
        "image".into()
    } else {
        slug
    }
}

/// `YYYYMMDD-HHMMSS` in UTC for a Unix time.
fn timestamp(unix: f64) -> String {
    let secs = unix.max(0.0) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn temp_path(dir: &Path) -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    dir.join(format!(
        ".diffugen-{}-{}.png.tmp",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Writes `bytes` to a new temporary file in `dir`; on failure (a full disk) nothing is left behind.
fn write_temp(dir: &Path, bytes: &[u8]) -> io::Result<PathBuf> {
    fs::create_dir_all(dir)?;
    let tmp = temp_path(dir);
    let written = fs::File::create(&tmp).and_then(|mut file| {
        file.write_all(bytes)?;
        file.sync_all()
    });
    match written {
        Ok(()) => Ok(tmp),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Writes one image atomically and returns its final path.
pub fn save(
    destination: &Destination,
    index: u32,
    image: &diffugen_sd::RgbImage,
    record: &Record,
) -> io::Result<PathBuf> {
    let bytes = encode_png(image, Some(record))?;
    let mut base = if record.is_generated() {
        format!(
            "{}-{}-{}",
            timestamp(record.created),
            record.seed,
            slug(&record.prompt)
        )
    } else {
        timestamp(record.created)
    };
    if let Some(upscale) = &record.upscale {
        base.push_str(&format!("-x{}", upscale.scale));
    }
    place(destination, index, &bytes, &base)
}

/// Writes a PNG made elsewhere (a cluster worker's image, its record inside) atomically to `destination`, named as
/// the worker named it (`file_name`), and returns its final path.
pub fn save_received(
    destination: &Destination,
    index: u32,
    bytes: &[u8],
    file_name: &str,
) -> io::Result<PathBuf> {
    let stem = Path::new(file_name)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Only the name's own characters: a worker does not choose the folder.
    let base: String = stem
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(120)
        .collect();
    let base = if base.is_empty() {
        "image".into()
    } else {
        base
    };
    place(destination, index, bytes, &base)
}

/// Puts `bytes` at `destination` (image `index` of a batch): the exact file (a batch gets `-2`, `-3`, ...), or
/// `base`.png in the folder without replacing anything (a name that exists gets the next suffix).
fn place(destination: &Destination, index: u32, bytes: &[u8], base: &str) -> io::Result<PathBuf> {
    match destination {
        Destination::File(path) => {
            let target = if index == 0 {
                path.clone()
            } else {
                let stem = path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let ext = path
                    .extension()
                    .map(|e| e.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "png".into());
                path.with_file_name(format!("{stem}-{}.{ext}", index + 1))
            };
            let dir = target
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let tmp = write_temp(dir, bytes)?;
            fs::rename(&tmp, &target).inspect_err(|_| {
                let _ = fs::remove_file(&tmp);
            })?;
            Ok(target)
        }
        Destination::Folder(dir) => {
            let tmp = write_temp(dir, bytes)?;
            let result = (1..10_000).find_map(|n| {
                let name = if n == 1 {
                    format!("{base}.png")
                } else {
                    format!("{base}-{n}.png")
                };
                let target = dir.join(name);
                match fs::hard_link(&tmp, &target) {
                    Ok(()) => Some(Ok(target)),
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => None,
                    Err(e) => Some(Err(e)),
                }
            });
            let _ = fs::remove_file(&tmp);
            result.unwrap_or_else(|| Err(io::Error::other("no free file name")))
        }
    }
}

/// Why a write failed, in words: a full disk says so and what to do.
pub fn io_reason(e: &io::Error) -> String {
    if e.kind() == io::ErrorKind::StorageFull || e.raw_os_error() == Some(28) {
        format!("the disk is full ({e}); free some space and run the job again")
    } else if e.kind() == io::ErrorKind::FileTooLarge || e.raw_os_error() == Some(27) {
        format!("the file system refused a file this large ({e}); check its quota or size limit")
    } else {
        e.to_string()
    }
}

pub use diffugen_pngtext::INPUTS_FOLDER;

/// The pictures a job rendered from, kept beside its images.
#[derive(Debug, Default)]
pub struct SavedInputs {
    pub init_image: Option<PathBuf>,
    pub mask: Option<PathBuf>,
    /// The ControlNet's control map.
    pub control: Option<PathBuf>,
}

/// Keeps the init image, mask and control map a job renders from beside its images (`inputs/<hash>.png`, one file
/// per distinct image), so that its gallery entries can be remixed as they were made; returns their paths. Only for
/// jobs that write into a folder (a gallery), not for a single output file the user named.
pub fn save_inputs(destination: &Destination, spec: &JobSpec) -> io::Result<SavedInputs> {
    let Destination::Folder(dir) = destination else {
        return Ok(SavedInputs::default());
    };
    let dir = dir.join(INPUTS_FOLDER);
    let keep = |raw: &Option<crate::protocol::RawImage>| -> io::Result<Option<PathBuf>> {
        let Some(raw) = raw else { return Ok(None) };
        let image = raw.decode().map_err(io::Error::other)?;
        let bytes = encode_png(&image, None)?;
        let hash: String = sha2::Sha256::digest(&bytes)
            .iter()
            .take(12)
            .map(|b| format!("{b:02x}"))
            .collect();
        let target = dir.join(format!("{hash}.png"));
        if !target.is_file() {
            let tmp = write_temp(&dir, &bytes)?;
            fs::rename(&tmp, &target).inspect_err(|_| {
                let _ = fs::remove_file(&tmp);
            })?;
        }
        Ok(Some(target))
    };
    Ok(SavedInputs {
        init_image: keep(&spec.init_image)?,
        mask: keep(&spec.mask)?,
        control: keep(&spec.control.as_ref().map(|c| c.map.clone()))?,
    })
}

/// Removes temporary files a crash or a full disk left in `dir` (and its inputs folder); returns how many.
pub fn remove_stale_temps(dir: &Path) -> usize {
    let mut removed = 0;
    for folder in [dir.to_path_buf(), dir.join(INPUTS_FOLDER)] {
        let Ok(entries) = fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(".diffugen-")
                && name.ends_with(".png.tmp")
                && fs::remove_file(entry.path()).is_ok()
            {
                removed += 1;
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {

    #[test]
    fn an_image_from_elsewhere_lands_in_the_folder_whatever_name_it_came_with() {
        let dir = tempfile::tempdir().unwrap();
        let destination = Destination::Folder(dir.path().to_path_buf());
        for name in ["../../evil.png", "/etc/passwd", "a b/c.png", ""] {
            let path = save_received(&destination, 0, b"\x89PNG", name).unwrap();
            assert_eq!(
                path.parent(),
                Some(dir.path()),
                "{name} -> {}",
                path.display()
            );
        }
        let again = save_received(&destination, 0, b"\x89PNG", "../../evil.png").unwrap();
        assert_eq!(
            again.file_name().unwrap(),
            "evil-2.png",
            "nothing is replaced"
        );
    }

    use super::*;

    #[test]
    fn timestamps_are_utc_calendar_dates() {
        assert_eq!(timestamp(0.0), "19700101-000000");
        assert_eq!(timestamp(1_795_478_400.0 + 3_723.0), "20261124-010203");
    }

    #[test]
    fn slugs_keep_the_first_words_of_the_prompt() {
        assert_eq!(slug("A red fox, in the snow!"), "a-red-fox-in-the-snow");
        assert_eq!(slug("!!!"), "image");
    }
}

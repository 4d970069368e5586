//! `diffugen upscale`: images enlarged by an ESRGAN model from the models folders, or by Lanczos / nearest, as one
//! job through the same queue as a render.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use diffugen_engine::upscale::{SourceImage, UpscaleRequest};
use diffugen_engine::{Destination, Work};
use diffugen_runtime::{Config, Flags};

#[derive(Args)]
pub struct UpscaleArgs {
    #[command(flatten)]
    ollama: crate::vram::OllamaArgs,
    #[command(flatten)]
    vram: crate::vram::PolicyArgs,
    /// The images to enlarge (PNG, JPEG or WebP); an image DiffuGen made keeps its prompt and parameters.
    #[arg(required = true, value_name = "IMAGE")]
    images: Vec<PathBuf>,
    /// `lanczos`, `nearest`, or an upscaling (ESRGAN) model's id from the models folder (see `diffugen models`)
    /// [default: lanczos]
    #[arg(long, short)]
    upscaler: Option<String>,
    /// The factor, above 1 and up to 8 [default: 2]
    #[arg(long, short, conflicts_with_all = ["width", "height"])]
    scale: Option<f64>,
    /// The exact final width (with --height)
    #[arg(long, short = 'W', requires = "height")]
    width: Option<u32>,
    /// The exact final height (with --width)
    #[arg(long, short = 'H', requires = "width")]
    height: Option<u32>,
    /// The tile side a model processes at a time, 32..1024 [default: 128]
    #[arg(long)]
    tile_size: Option<u32>,
    /// CPU threads [default: physical cores]
    #[arg(long, short)]
    threads: Option<u32>,
    /// Write the result to this file (several images: -2, -3, ... before the extension); not recorded in the
    /// gallery.
    #[arg(long, short, value_name = "FILE", conflicts_with = "output_dir")]
    output: Option<PathBuf>,
    /// Write the results into this folder [default: the outputs folder, recorded in the gallery]
    #[arg(long, value_name = "DIR")]
    output_dir: Option<PathBuf>,
    /// Print every event as a JSON line on stdout instead of a progress bar.
    #[arg(long)]
    json: bool,
    /// Send the job to a running DiffuGen — the desktop app or `diffugen serve` — instead of upscaling in this
    /// process: the images travel in the request, the result is written and recorded there, and its progress is
    /// reported here [URL default: http://127.0.0.1:5199]
    #[arg(long, value_name = "URL", num_args = 0..=1, default_missing_value = "http://127.0.0.1:5199",
          conflicts_with_all = ["output", "output_dir", "threads"])]
    server: Option<String>,
    /// The server's API key, if it requires one (with --server)
    #[arg(long, env = "DIFFUGEN_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
}

impl UpscaleArgs {
    pub fn flags(&self) -> Flags {
        self.ollama.flags().merge(self.vram.flags())
    }
}

pub fn run(config: &Config, args: UpscaleArgs) -> Result<ExitCode, String> {
    let mut images = Vec::with_capacity(args.images.len());
    for path in &args.images {
        let bytes =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        images.push(SourceImage {
            bytes,
            source: path.file_name().map(|n| n.to_string_lossy().into_owned()),
        });
    }
    let request = UpscaleRequest {
        upscaler: args.upscaler.clone(),
        scale: args.scale,
        width: args.width,
        height: args.height,
        tile_size: args.tile_size,
    };
    if let Some(url) = &args.server {
        return remote(&args, &request, &images, url);
    }
    let mut spec = diffugen_engine::upscale::validate(&request, &images, &config.library())
        .map_err(|errors| {
            errors
                .0
                .iter()
                .map(|e| {
                    // Name the file rather than its index among the arguments.
                    let field = match e.field.strip_prefix("images[") {
                        Some(rest) => rest
                            .trim_end_matches(']')
                            .parse::<usize>()
                            .ok()
                            .and_then(|i| args.images.get(i))
                            .map_or(e.field.clone(), |p| p.display().to_string()),
                        None if e.field == "image" => args.images[0].display().to_string(),
                        None => format!("--{}", e.field.replace('_', "-")),
                    };
                    format!("invalid {field}: {}", e.message)
                })
                .collect::<Vec<_>>()
                .join("\nerror: ")
        })?;
    spec.threads = args.threads.or(config.settings.threads);
    let destination = match (&args.output, &args.output_dir) {
        (Some(file), _) => Destination::File(file.clone()),
        (None, Some(dir)) => Destination::Folder(dir.clone()),
        (None, None) => Destination::Folder(config.outputs_dir()),
    };
    let options = crate::start_options(config, args.vram.config(config)?, 1, false, 1)?;
    crate::generate::run_one(
        options,
        Work::Upscale(Box::new(spec)),
        destination,
        args.json,
    )
}

/// `--server`: the images as base64 in a `POST /api/v1/upscale`, followed to the end like a local job. The server
/// checks the request; its refusal names the field.
fn remote(
    args: &UpscaleArgs,
    request: &UpscaleRequest,
    images: &[SourceImage],
    url: &str,
) -> Result<ExitCode, String> {
    use base64::Engine as _;
    let mut body = serde_json::to_value(request).map_err(|e| e.to_string())?;
    body["images"] = images
        .iter()
        .map(|image| base64::engine::general_purpose::STANDARD.encode(&image.bytes))
        .collect();
    if let Some(map) = body.as_object_mut() {
        map.retain(|_, v| !v.is_null());
    }
    let summary = |outputs: &[diffugen_engine::Output]| {
        format!(
            "{} image(s) upscaled, recorded in the server's gallery",
            outputs.len()
        )
    };
    crate::generate::remote_job(
        url,
        args.api_key.clone(),
        "/api/v1/upscale",
        &body,
        args.json,
        &summary,
    )
}

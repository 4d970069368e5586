//! `diffugen generate`: one job through the supervised engine, with a progress bar or JSON events.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use diffugen_engine::params::{
    HiresUpscaler, ImageInput, LoraRequest, PreviewMode, PreviewRequest,
};
use diffugen_engine::{Destination, GenerateRequest, JobEvent, Stage};
use diffugen_runtime::{Config, Flags, Runtime};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    ollama: crate::vram::OllamaArgs,
    #[command(flatten)]
    vram: crate::vram::PolicyArgs,
    /// Model id from the models folder (see `diffugen models`) or a path to a model file or preset.
    #[arg(long, short)]
    model: String,
    /// What to draw. `<lora:name:weight>` applies a LoRA from the models folder's loras/ subfolder.
    #[arg(long, short)]
    prompt: String,
    #[arg(long, short = 'n')]
    negative_prompt: Option<String>,
    /// Multiple of 8, 64..2048 [default: the model family's]
    #[arg(long, short = 'W')]
    width: Option<u32>,
    /// Multiple of 8, 64..2048 [default: the model family's]
    #[arg(long, short = 'H')]
    height: Option<u32>,
    /// Sampling steps, 1..150 [default: the model family's]
    #[arg(long)]
    steps: Option<u32>,
    /// Classifier-free guidance scale [default: the model family's]
    #[arg(long)]
    cfg_scale: Option<f32>,
    /// sd.cpp sampler: euler, euler_a, heun, dpm2, dpm++2s_a, dpm++2m, dpm++2mv2, ipndm, ipndm_v, lcm, ...
    #[arg(long)]
    sampler: Option<String>,
    /// sd.cpp scheduler: discrete, karras, exponential, ays, gits, sgm_uniform, simple, ... [default: the model's]
    #[arg(long)]
    scheduler: Option<String>,
    /// -1 for a random seed; the seed used is always printed.
    #[arg(long, short, allow_negative_numbers = true)]
    seed: Option<i64>,
    /// Images to generate (seeds seed, seed+1, ...).
    #[arg(long, default_value_t = 1)]
    count: u32,
    #[arg(long, allow_negative_numbers = true)]
    clip_skip: Option<i32>,
    /// img2img: start from this image.
    #[arg(long, value_name = "PATH")]
    init_image: Option<PathBuf>,
    /// img2img: how much of the init image to repaint, 0..1 [default: 0.75]
    #[arg(long)]
    strength: Option<f32>,
    /// img2img: how an init image of another shape is brought to the size: stretch, crop (to cover) or fill (fitted
    /// inside, the bands filled with the image stretched) [default: stretch]
    #[arg(long, value_name = "MODE", value_parser = parse_resize_mode, requires = "init_image")]
    resize_mode: Option<diffugen_engine::params::ResizeMode>,
    /// Inpainting: white areas of this mask are repainted (needs --init-image).
    #[arg(long, value_name = "PATH")]
    mask: Option<PathBuf>,
    /// A ControlNet model (SD 1.x) from the models folder, by id; needs --control-image.
    #[arg(long, value_name = "ID", requires = "control_image")]
    control_model: Option<String>,
    /// The control picture (PNG, JPEG or WebP); needs --control-model.
    #[arg(long, value_name = "PATH", requires = "control_model")]
    control_image: Option<PathBuf>,
    /// How the picture becomes a control map: none (a map made elsewhere) or canny [default: none]
    #[arg(long, value_name = "MODULE", value_parser = parse_control_module)]
    control_module: Option<diffugen_engine::control::ControlModule>,
    /// How strongly the map steers, 0 to 2 [default: 1]
    #[arg(long, value_name = "W")]
    control_strength: Option<f32>,
    /// canny: low threshold, 0 to 255 [default: 100]
    #[arg(long, value_name = "N")]
    control_low: Option<f64>,
    /// canny: high threshold, 0 to 255 [default: 200]
    #[arg(long, value_name = "N")]
    control_high: Option<f64>,
    /// A LoRA from the loras/ folder, NAME:WEIGHT (repeatable).
    #[arg(long = "lora", value_name = "NAME:WEIGHT")]
    loras: Vec<String>,
    /// CPU threads [default: physical cores]
    #[arg(long)]
    threads: Option<u32>,
    /// Write to this file (a batch adds -2, -3, ...).
    #[arg(long, short, value_name = "FILE", conflicts_with = "output_dir")]
    output: Option<PathBuf>,
    /// Write into this folder with generated names [default: <data dir>/outputs]
    #[arg(long, value_name = "DIR")]
    output_dir: Option<PathBuf>,
    /// Hires fix: a second, larger pass at this many times the size (1 to 4, e.g. 2)
    #[arg(long, value_name = "N")]
    hires_scale: Option<f32>,
    /// Hires fix: the final width instead of a scale (the height follows the aspect ratio unless given)
    #[arg(long, value_name = "PX")]
    hires_width: Option<u32>,
    /// Hires fix: the final height instead of a scale
    #[arg(long, value_name = "PX")]
    hires_height: Option<u32>,
    /// Hires fix: how the first pass is enlarged: latent (default), latent_nearest, latent_nearest_exact,
    /// latent_antialiased, latent_bicubic, latent_bicubic_antialiased, lanczos, nearest, or an upscaling (ESRGAN)
    /// model's id from the models folder (see `diffugen models`)
    #[arg(long, value_name = "UPSCALER")]
    hires_upscaler: Option<String>,
    /// Hires fix: sampling steps of the second pass [default: the first pass's]
    #[arg(long, value_name = "N")]
    hires_steps: Option<u32>,
    /// Hires fix: how much of the enlarged image the second pass repaints, above 0 to 1 [default: 0.7]
    #[arg(long, value_name = "STRENGTH")]
    hires_denoise: Option<f32>,
    /// Emit live previews every N steps (with --json: `preview` events carrying a PNG).
    #[arg(long, value_name = "N")]
    preview_every: Option<u32>,
    /// Let the local LLM (Ollama) rewrite the prompt for the model's family before rendering (the prompt
    /// assistant); the image records both prompts
    #[arg(long)]
    enhance: bool,
    /// The Ollama model that rewrites it [default: the assistant_model setting, else the LLM Ollama has loaded]
    #[arg(long, value_name = "MODEL", requires = "enhance")]
    enhance_model: Option<String>,
    /// Let a vision model in Ollama score the result against the prompt; below 6/10 the job renders once more with
    /// the next seeds and keeps the better take
    #[arg(long)]
    critique: bool,
    /// The vision model that scores it [default: the critique_model setting]
    #[arg(long, value_name = "MODEL", requires = "critique")]
    critique_model: Option<String>,
    /// One JSON event per line on stdout instead of a progress bar.
    #[arg(long)]
    json: bool,
    /// Send the job to a running DiffuGen — the desktop app or `diffugen serve` — instead of rendering in this
    /// process: it joins that queue (the app shows it live) and its progress is reported here
    /// [URL default: http://127.0.0.1:5199]
    #[arg(long, value_name = "URL", num_args = 0..=1, default_missing_value = "http://127.0.0.1:5199")]
    server: Option<String>,
    /// The server's API key, if it requires one (with --server)
    #[arg(long, env = "DIFFUGEN_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    #[command(flatten)]
    memory: MemoryArgs,
}

/// Memory and speed options (each left out: the model card's, then the planner's choice).
#[derive(clap::Args, Debug, Default)]
pub struct MemoryArgs {
    /// Where a part runs, PART=PLACE (repeatable): PART diffusion, text_encoders (or clip_l, clip_g, t5xxl, llm),
    /// vae; PLACE auto, gpu, cpu, offload
    #[arg(long = "place", value_name = "PART=PLACE")]
    place: Vec<String>,
    /// GiB of VRAM for the diffusion model's weights; the rest stream in from RAM
    #[arg(long, value_name = "GIB")]
    vram_budget: Option<f64>,
    /// VAE tiling: auto, on, off [default: auto]
    #[arg(long, value_name = "MODE")]
    vae_tiling: Option<String>,
    /// VAE tile side in pixels (multiple of 32) [default: 256]
    #[arg(long, value_name = "PX")]
    vae_tile_size: Option<u32>,
    /// Overlap of VAE tiles, 0 to 0.5 [default: 0.5]
    #[arg(long, value_name = "FRACTION")]
    vae_tile_overlap: Option<f64>,
    /// Flash attention: on or off [default: the planner's choice]
    #[arg(long, value_name = "on|off")]
    flash_attn: Option<String>,
    /// Memory-map weight files: on or off [default: off]
    #[arg(long, value_name = "on|off")]
    mmap: Option<String>,
    /// Step cache preset: off, fast, faster [default: off]
    #[arg(long, value_name = "PRESET")]
    cache: Option<String>,
}

fn on_off(flag: &str, value: &Option<String>) -> Result<Option<bool>, String> {
    value
        .as_deref()
        .map(|v| match v.to_ascii_lowercase().as_str() {
            "on" | "true" | "yes" => Ok(true),
            "off" | "false" | "no" => Ok(false),
            other => Err(format!("--{flag}: '{other}' is not on or off")),
        })
        .transpose()
}

impl MemoryArgs {
    /// The options these flags ask for; a bad value names its flag.
    pub fn options(&self) -> Result<diffugen_models::MemoryOptions, String> {
        let mut placement = std::collections::BTreeMap::new();
        for item in &self.place {
            let (part, place) = item
                .split_once('=')
                .ok_or_else(|| format!("--place {item}: write PART=PLACE, e.g. t5xxl=cpu"))?;
            let place = place.parse().map_err(|e| format!("--place {item}: {e}"))?;
            placement.insert(part.trim().to_string(), place);
        }
        Ok(diffugen_models::MemoryOptions {
            placement,
            vram_budget_gib: self.vram_budget,
            vae_tiling: self
                .vae_tiling
                .as_deref()
                .map(str::parse)
                .transpose()
                .map_err(|e| format!("--vae-tiling: {e}"))?,
            vae_tile_size: self.vae_tile_size,
            vae_tile_overlap: self.vae_tile_overlap,
            flash_attn: on_off("flash-attn", &self.flash_attn)?,
            mmap: on_off("mmap", &self.mmap)?,
            cache: self
                .cache
                .as_deref()
                .map(str::parse)
                .transpose()
                .map_err(|e| format!("--cache: {e}"))?,
        })
    }
}

fn parse_lora(text: &str) -> Result<LoraRequest, String> {
    let (name, weight) = match text.rsplit_once(':') {
        Some((name, weight)) => {
            let weight = weight.parse().map_err(|_| {
                format!("--lora {text}: weight '{weight}' is not a number (write NAME:WEIGHT)")
            })?;
            (name, weight)
        }
        None => (text, 1.0),
    };
    Ok(LoraRequest {
        name: name.to_string(),
        weight,
    })
}

fn parse_control_module(text: &str) -> Result<diffugen_engine::control::ControlModule, String> {
    text.parse()
}

fn parse_resize_mode(text: &str) -> Result<diffugen_engine::params::ResizeMode, String> {
    use diffugen_engine::params::ResizeMode;
    match text.trim().to_ascii_lowercase().as_str() {
        "stretch" => Ok(ResizeMode::Stretch),
        "crop" => Ok(ResizeMode::Crop),
        "fill" => Ok(ResizeMode::Fill),
        other => Err(format!(
            "'{other}' is not a resize mode: stretch, crop or fill"
        )),
    }
}

impl GenerateArgs {
    /// The ControlNet the `--control-*` flags ask for.
    fn control(&self) -> Option<diffugen_engine::control::ControlRequest> {
        let (model, image) = (self.control_model.as_ref()?, self.control_image.as_ref()?);
        Some(diffugen_engine::control::ControlRequest {
            model: model.clone(),
            image: ImageInput::Path(image.clone()),
            module: self.control_module,
            strength: self.control_strength,
            low_threshold: self.control_low,
            high_threshold: self.control_high,
            processor_res: None,
        })
    }

    /// The hires pass the `--hires-*` flags ask for (any of them turns it on).
    fn hires(&self) -> Option<diffugen_engine::params::HiresRequest> {
        let asked = self.hires_scale.is_some()
            || self.hires_width.is_some()
            || self.hires_height.is_some()
            || self.hires_upscaler.is_some()
            || self.hires_steps.is_some()
            || self.hires_denoise.is_some();
        asked.then(|| diffugen_engine::params::HiresRequest {
            scale: self.hires_scale.or_else(|| {
                (self.hires_width.is_none() && self.hires_height.is_none()).then_some(2.0)
            }),
            width: self.hires_width,
            height: self.hires_height,
            // A built-in upscaler by name, else an upscaling model's id (checked with the rest of the request).
            upscaler: self
                .hires_upscaler
                .as_deref()
                .and_then(|name| name.parse::<HiresUpscaler>().ok()),
            model: self
                .hires_upscaler
                .clone()
                .filter(|name| name.parse::<HiresUpscaler>().is_err()),
            steps: self.hires_steps,
            denoising_strength: self.hires_denoise,
        })
    }

    /// What these flags set in the configuration (where Ollama is, the VRAM policy).
    pub fn flags(&self) -> Flags {
        self.ollama.flags().merge(self.vram.flags())
    }
}

pub fn run(config: &Config, args: GenerateArgs) -> Result<ExitCode, String> {
    let loras = args
        .loras
        .iter()
        .map(|l| parse_lora(l))
        .collect::<Result<Vec<_>, _>>()?;
    let request = GenerateRequest {
        model: args.model.clone(),
        prompt: args.prompt.clone(),
        negative_prompt: args.negative_prompt.clone(),
        width: args.width,
        height: args.height,
        steps: args.steps,
        cfg_scale: args.cfg_scale,
        sampler: args.sampler.clone(),
        scheduler: args.scheduler.clone(),
        seed: args.seed,
        count: Some(args.count),
        clip_skip: args.clip_skip,
        loras,
        init_image: args.init_image.clone().map(ImageInput::Path),
        mask: args.mask.clone().map(ImageInput::Path),
        strength: args.strength,
        resize_mode: args.resize_mode,
        threads: args.threads.or(config.settings.threads),
        preview: args.preview_every.map(|interval| PreviewRequest {
            mode: PreviewMode::Proj,
            interval,
        }),
        memory: args.memory.options()?,
        hires: args.hires(),
        control: args.control(),
        enhance_prompt: args.enhance.then_some(true),
        enhance_model: args.enhance_model.clone(),
        critique: args.critique.then_some(true),
        critique_model: args.critique_model.clone(),
    };
    if let Some(url) = &args.server {
        return remote(&args, request, url);
    }
    let library = config.library();
    let spec = diffugen_engine::validate(&request, &library).map_err(|errors| {
        errors
            .0
            .iter()
            .map(|e| format!("invalid {}: {}", e.field, e.message))
            .collect::<Vec<_>>()
            .join("\nerror: ")
    })?;
    let destination = match (&args.output, &args.output_dir) {
        (Some(file), _) => Destination::File(file.clone()),
        (None, Some(dir)) => Destination::Folder(dir.clone()),
        (None, None) => Destination::Folder(config.outputs_dir()),
    };
    // The same runtime `serve` and the app run, for one job: its queue's runner makes room on the GPU (unloading
    // Ollama's LLMs per the policy and confirming the memory is free), plans the job, renders it, records it in the
    // gallery and gives the GPU back.
    let options = crate::start_options(config, args.vram.config(config)?, 1, false, 1)?;
    run_one(
        options,
        diffugen_engine::Work::Generate(Box::new(spec)),
        destination,
        args.json,
    )
}

/// Runs one job in the same runtime `serve` and the app run (an in-memory queue), reports its events, waits for the
/// GPU to be handed back, and turns the outcome into the exit code: the written paths on stdout, a summary on
/// stderr, 130 when cancelled.
pub(crate) fn run_one(
    options: diffugen_runtime::StartOptions,
    work: diffugen_engine::Work,
    destination: Destination,
    json: bool,
) -> Result<ExitCode, String> {
    let tokio = tokio::runtime::Runtime::new()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let upscale = matches!(work, diffugen_engine::Work::Upscale(_));
    tokio.block_on(async move {
        let runtime = Runtime::start(options).await.map_err(|e| e.to_string())?;
        let ended = follow(&runtime, work, destination, json).await;
        // Wait for the queue to give the GPU back (the unloaded LLMs restored, per --after-queue).
        runtime.jobs().until_idle().await;
        runtime.shutdown().await;
        let (last, seconds) = ended?;
        match last {
            Stage::Done { outputs } => {
                if !json {
                    for output in &outputs {
                        println!("{}", output.path);
                    }
                    if upscale {
                        let sizes: Vec<String> = outputs
                            .iter()
                            .map(|o| format!("{}x{}", o.width, o.height))
                            .collect();
                        eprintln!("upscaled to {} in {seconds:.1}s", sizes.join(", "));
                    } else {
                        eprintln!(
                            "seed {}; {} image(s) in {seconds:.1}s",
                            outputs.first().map(|o| o.seed).unwrap_or_default(),
                            outputs.len(),
                        );
                    }
                }
                Ok(ExitCode::SUCCESS)
            }
            Stage::Cancelled { reason } => {
                eprintln!("cancelled: {reason}");
                Ok(ExitCode::from(130))
            }
            Stage::Failed { error, .. } => Err(error),
            other => Err(format!("the job ended without a result ({})", other.name())),
        }
    })
}

/// Queues the job and reports its events until it ends; Ctrl+C cancels it (ending the worker process) instead of
/// leaving it orphaned. Returns the final stage and the job's seconds.
async fn follow(
    runtime: &Runtime,
    work: diffugen_engine::Work,
    destination: Destination,
    json: bool,
) -> Result<(Stage, f64), String> {
    let jobs = runtime.jobs();
    let id = jobs
        .submit_work(work, destination, "cli")
        .map_err(|e| e.to_string())?;
    let subscription = jobs.subscribe(&id).map_err(|e| e.to_string())?;
    let mut reporter = Reporter::new(json);
    let mut live = subscription.live;
    let mut pending: std::collections::VecDeque<JobEvent> = subscription.history.into();
    let interrupt = tokio::signal::ctrl_c();
    tokio::pin!(interrupt);
    let mut interrupted = false;
    loop {
        let event = match pending.pop_front() {
            Some(event) => event,
            None => tokio::select! {
                _ = &mut interrupt, if !interrupted => {
                    interrupted = true;
                    let _ = jobs.cancel(&id, "interrupted (Ctrl+C)");
                    continue;
                }
                event = live.recv() => match event {
                    Ok(event) => event,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                        reporter.finish();
                        return Err("the queue ended before the job did".into());
                    }
                },
            },
        };
        let last = event
            .stage
            .is_final()
            .then(|| (event.stage.clone(), event.elapsed_seconds));
        reporter.event(event);
        if let Some(last) = last {
            reporter.finish();
            return Ok(last);
        }
    }
}

/// `generate --server`: the job goes into a running DiffuGen's queue; its events come back over SSE.
fn remote(
    args: &GenerateArgs,
    mut request: GenerateRequest,
    url: &str,
) -> Result<ExitCode, String> {
    if args.output.is_some() || args.output_dir.is_some() {
        return Err(
            "--output and --output-dir do not apply with --server: the server writes into its own outputs folder \
             (the paths are printed)"
                .into(),
        );
    }
    // The server opens no file a client names: init images and masks travel in the request, so they work with a
    // server on another machine too.
    let control_image = request.control.as_mut().map(|c| &mut c.image);
    for image in [
        request.init_image.as_mut(),
        request.mask.as_mut(),
        control_image,
    ]
    .into_iter()
    .flatten()
    {
        if let ImageInput::Path(path) = image {
            let bytes = std::fs::read(&*path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            *image = ImageInput::Bytes(bytes);
        }
    }
    let body = serde_json::to_value(&request).map_err(|e| e.to_string())?;
    let summary = |outputs: &[diffugen_engine::Output]| {
        let seeds: Vec<String> = outputs.iter().map(|o| o.seed.to_string()).collect();
        format!("seed {}; {} image(s)", seeds.join(", "), outputs.len())
    };
    remote_job(
        url,
        args.api_key.clone(),
        "/api/v1/jobs",
        &body,
        args.json,
        &summary,
    )
}

/// Sends a job to a running DiffuGen (`path`, a JSON `body`, tagged as the CLI's) and follows its events to the end
/// with the terminal's progress: the written files on stdout (JSON lines with `json`), `summary` of them on stderr.
/// Ctrl+C cancels the job on the server.
pub(crate) fn remote_job(
    url: &str,
    api_key: Option<String>,
    path: &str,
    body: &serde_json::Value,
    json: bool,
    summary: &dyn Fn(&[diffugen_engine::Output]) -> String,
) -> Result<ExitCode, String> {
    let runtime = tokio::runtime::Runtime::new()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(async move {
        use futures_util::StreamExt;
        let server = crate::client::Server::connect(url, api_key).await?;
        let body: serde_json::Value = server
            .reply(
                server
                    .request(reqwest::Method::POST, path)
                    .header(diffugen_server::native::SOURCE_HEADER, "cli")
                    .json(body),
            )
            .await
            .map_err(|e| format!("the job was not queued: {e}"))?;
        let id = body["id"]
            .as_str()
            .ok_or("the server's reply names no job id")?
            .to_string();
        if !json {
            eprintln!("queued on {} as {id}", server.base());
        }
        let events = server
            .request(reqwest::Method::GET, &format!("/api/v1/jobs/{id}/events"))
            .send()
            .await
            .map_err(|e| format!("cannot follow the job's events: {e}"))?;
        let mut body = events.bytes_stream();
        let mut buffer = String::new();
        let mut reporter = Reporter::new(json);
        let mut last: Option<Stage> = None;
        let stop = tokio::signal::ctrl_c();
        tokio::pin!(stop);
        while last.as_ref().is_none_or(|stage| !stage.is_final()) {
            tokio::select! {
                _ = &mut stop => {
                    let _ = server
                        .request(reqwest::Method::POST, &format!("/api/v1/jobs/{id}/cancel"))
                        .send()
                        .await;
                    reporter.finish();
                    eprintln!("cancelled: interrupted (Ctrl+C)");
                    return Ok(ExitCode::from(130));
                }
                chunk = body.next() => {
                    let Some(Ok(chunk)) = chunk else { break };
                    buffer.push_str(&String::from_utf8_lossy(&chunk));
                    for data in crate::client::sse_data(&mut buffer) {
                        if let Ok(event) = serde_json::from_str::<JobEvent>(&data) {
                            last = Some(event.stage.clone());
                            reporter.event(event);
                        }
                    }
                }
            }
        }
        reporter.finish();
        match last {
            Some(Stage::Done { outputs }) => {
                if !json {
                    for output in &outputs {
                        println!("{}", output.path);
                    }
                    eprintln!("{}", summary(&outputs));
                }
                Ok(ExitCode::SUCCESS)
            }
            Some(Stage::Cancelled { reason }) => {
                eprintln!("cancelled: {reason}");
                Ok(ExitCode::from(130))
            }
            Some(Stage::Failed { error, .. }) => Err(error),
            _ => Err("the server closed the event stream before the job ended".into()),
        }
    })
}

/// Progress on the terminal: a bar on an interactive stderr, one line per phase otherwise, or JSON lines.
struct Reporter {
    json: bool,
    bar: Option<ProgressBar>,
    last_phase: &'static str,
}

impl Reporter {
    fn new(json: bool) -> Reporter {
        let bar = (!json && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::new(100);
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg:<32} [{bar:30}] {pos:>3}%")
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            bar.enable_steady_tick(std::time::Duration::from_millis(120));
            bar
        });
        Reporter {
            json,
            bar,
            last_phase: "",
        }
    }

    fn event(&mut self, event: JobEvent) {
        if self.json {
            let mut stdout = std::io::stdout().lock();
            if let Ok(line) = serde_json::to_string(&event) {
                let _ = writeln!(stdout, "{line}");
                let _ = stdout.flush();
            }
            return;
        }
        let Some(mut message) = event.stage.describe() else {
            return;
        };
        match &event.stage {
            // Lines of their own, above the bar.
            Stage::Plan { .. } | Stage::Warning { .. } => {
                match &self.bar {
                    Some(bar) => bar.println(message),
                    None => eprintln!("{message}"),
                }
                return;
            }
            Stage::Queued { .. } => message = "queued".to_string(),
            Stage::Sampling { .. } => {
                if let Some(eta) = event.eta_seconds {
                    message.push_str(&format!(" eta {eta:.0}s"));
                }
            }
            _ => {}
        }
        match &self.bar {
            Some(bar) => {
                bar.set_message(message);
                if let Some(percent) = event.percent {
                    bar.set_position(percent.round() as u64);
                }
            }
            None => {
                // Not a terminal: one line per phase change, plus each sampling step.
                let phase = event.stage.name();
                if phase != self.last_phase || phase == "sampling" || phase == "upscaling" {
                    eprintln!("{message}");
                }
                self.last_phase = phase;
            }
        }
    }

    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

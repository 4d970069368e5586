//! `diffugen models convert`: a smaller copy of a model (or of one part of it) made on this machine, shown with its
//! size and VRAM need before it starts, written by an engine worker and listed as a model when done.

use std::process::ExitCode;

use clap::Args;
use diffugen_engine::convert::{self, ConvertEvent, ConvertRequest};
use diffugen_engine::WorkerCommand;
use diffugen_models::{Part, QuantType};

use diffugen_runtime::Config;

#[derive(Args)]
pub struct ConvertArgs {
    /// A model id (see `diffugen models`)
    id: String,
    /// The weight type of the copy: q8_0, q6_k, q5_k, q5_1, q5_0, q4_k, q4_1, q4_0, q3_k, q2_k, f16
    #[arg(long = "type", value_name = "TYPE")]
    weight_type: String,
    /// Convert one part of a multi-file model: diffusion, vae, clip_l, clip_g, t5xxl, llm [default: the
    /// checkpoint, or the diffusion model]
    #[arg(long, value_name = "PART")]
    part: Option<String>,
    /// File name of the copy in the models folder [default: <file>-<type>.gguf]
    #[arg(long, value_name = "NAME")]
    output: Option<String>,
}

fn parse_part(text: &str) -> Result<Part, String> {
    serde_json::from_value(serde_json::Value::from(text.trim())).map_err(|_| {
        format!(
            "--part: '{text}' is not a part; allowed: diffusion, vae, clip_l, clip_g, t5xxl, llm"
        )
    })
}

fn gib(bytes: f64) -> String {
    format!("{:.2} GiB", bytes / f64::from(1u32 << 30))
}

pub fn run(paths: &Config, args: &ConvertArgs, json: bool) -> Result<ExitCode, String> {
    let weight_type: QuantType = args
        .weight_type
        .parse()
        .map_err(|e| format!("--type: {e}"))?;
    let part = args.part.as_deref().map(parse_part).transpose()?;
    let library = paths.library();
    let conversion = library
        .plan_conversion(&args.id, part, weight_type, args.output.as_deref())
        .map_err(|e| match e.field {
            "model" => e.message,
            flag => format!("--{flag}: {}", e.message),
        })?;
    let preview = &conversion.preview;
    if json {
        println!(
            "{}",
            serde_json::json!({ "event": "preview", "preview": preview })
        );
    } else {
        println!(
            "{} {}: {} → {} at {weight_type} (about {} → {}); VRAM need at its default size {} → {}",
            preview.model_id,
            preview.part.map_or("(whole file)", Part::name),
            preview.input,
            preview.output,
            gib(preview.current_bytes),
            gib(preview.expected_bytes),
            gib(preview.vram_now_bytes),
            gib(preview.vram_after_bytes),
        );
    }
    let request = ConvertRequest {
        input: preview.input.clone().into(),
        output: preview.output.clone().into(),
        weight_type,
        expected_bytes: preview.expected_bytes,
    };
    let command = WorkerCommand::current_exe(&[diffugen_engine::WORKER_SUBCOMMAND])
        .map_err(|e| format!("cannot find the diffugen executable: {e}"))?;
    let runtime = tokio::runtime::Runtime::new()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let mut last_tenth = None;
    let finish = |_: &convert::Written| library.finish_conversion(&conversion);
    let mut report = |event: ConvertEvent| {
        if json {
            if let Ok(line) = serde_json::to_string(&event) {
                println!("{line}");
            }
            return;
        }
        match event {
            ConvertEvent::Progress { percent, .. } => {
                let tenth = (percent / 10.0) as u32;
                if last_tenth != Some(tenth) {
                    last_tenth = Some(tenth);
                    eprintln!("converting: {percent:.0} %");
                }
            }
            ConvertEvent::Done {
                bytes,
                seconds,
                model_id,
                ..
            } => {
                eprintln!("written: {} in {seconds:.1} s", gib(bytes));
                println!("new model: {model_id}  (diffugen generate --model {model_id} ...)");
            }
            ConvertEvent::Started { .. } | ConvertEvent::Failed { .. } => {}
        }
    };
    runtime.block_on(convert::run(
        &command,
        "convert",
        &request,
        finish,
        &mut report,
    ))?;
    Ok(ExitCode::SUCCESS)
}

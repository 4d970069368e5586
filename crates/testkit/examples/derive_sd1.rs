//! Re-derives `data/sd15.manifest` and `data/sd15-controlnet.manifest`: the tensors sd.cpp asks of an SD 1.x
//! checkpoint and of a ControlNet for it, learned from its own log as for the SDXS manifest.
//! Run: `cargo run -p diffugen-testkit --example derive_sd1 -- <dir>` (writes both files into <dir>).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use diffugen_testkit::gguf::{self, DType, TensorInfo};

type Shapes = BTreeMap<String, Vec<u64>>;

fn write(path: &Path, shapes: &Shapes) {
    let tensors: Vec<TensorInfo> = shapes
        .iter()
        .map(|(name, ne)| TensorInfo {
            name: name.clone(),
            ne: ne.clone(),
            dtype: DType::F16,
        })
        .collect();
    gguf::write_sparse(path, &tensors).unwrap();
}

fn attempt(dir: &Path, model: &Shapes, control: Option<&Shapes>) -> Vec<String> {
    let model_path = dir.join("probe.gguf");
    write(&model_path, model);
    let control_path: Option<PathBuf> = control.map(|c| {
        let path = dir.join("probe-control.gguf");
        write(&path, c);
        path
    });
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    diffugen_sd::set_log_handler(move |_, text| sink.lock().unwrap().push(text.to_string()));
    let params = diffugen_sd::ContextParams {
        model_path: Some(model_path),
        control_net_path: control_path,
        threads: Some(1),
        ..Default::default()
    };
    let _ = diffugen_sd::Context::new(&params);
    let out = lines.lock().unwrap().clone();
    out
}

fn between<'a>(line: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = line.find(start)? + start.len();
    let to = line[from..].find(end)? + from;
    Some(&line[from..to])
}

/// Adds what the log says is missing (dummy shape) or mis-shaped (the shape it expected) to `target`.
fn learn(lines: &[String], target: &mut Shapes, owns: impl Fn(&str) -> bool) -> bool {
    let mut changed = false;
    for line in lines {
        if let Some(name) = between(line, "tensor '", "' not in model metadata") {
            if owns(name) && !target.contains_key(name) {
                target.insert(name.to_string(), vec![1]);
                changed = true;
            }
        }
        if let (Some(name), Some(expected)) = (
            between(line, "tensor '", "' has wrong shape"),
            between(line, "expected [", "]"),
        ) {
            if owns(name) {
                let mut ne: Vec<u64> = expected
                    .split(',')
                    .map(|d| d.trim().parse().unwrap())
                    .collect();
                while ne.len() > 1 && ne.last() == Some(&1) {
                    ne.pop();
                }
                if target.get(name) != Some(&ne) {
                    target.insert(name.to_string(), ne);
                    changed = true;
                }
            }
        }
    }
    changed
}

fn print(path: &Path, title: &str, shapes: &Shapes) {
    let mut text = format!("# {title}: tensor name, then ggml dimensions (ne order).\n");
    for (name, ne) in shapes {
        let dims: Vec<String> = ne.iter().map(u64::to_string).collect();
        text.push_str(&format!("{name} {}\n", dims.join(",")));
    }
    std::fs::write(path, text).unwrap();
}

fn main() {
    let out = PathBuf::from(std::env::args().nth(1).expect("an output folder"));
    let dir = std::env::temp_dir().join(format!("diffugen-sd1-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut model: Shapes = [
        (
            "model.diffusion_model.input_blocks.0.0.weight",
            vec![3u64, 3, 4, 320],
        ),
        (
            "model.diffusion_model.middle_block.1.norm.weight",
            vec![640],
        ),
        (
            "model.diffusion_model.output_blocks.7.1.norm.weight",
            vec![640],
        ),
        (
            "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight",
            vec![768, 49408],
        ),
    ]
    .into_iter()
    .map(|(n, s)| (n.to_string(), s))
    .collect();
    for _ in 0..4 {
        let lines = attempt(&dir, &model, None);
        if !learn(&lines, &mut model, |_| true) {
            break;
        }
    }
    let mut control: Shapes = [(
        "input_hint_block.0.weight".to_string(),
        vec![3u64, 3, 3, 16],
    )]
    .into();
    for _ in 0..4 {
        let lines = attempt(&dir, &model, Some(&control));
        let model_names: Vec<String> = model.keys().cloned().collect();
        if !learn(&lines, &mut control, |n| {
            !model_names.iter().any(|m| m == n)
        }) {
            break;
        }
    }
    let leftover = attempt(&dir, &model, Some(&control));
    for line in leftover.iter().filter(|l| {
        l.contains("not in model metadata")
            || l.contains("wrong shape")
            || l.contains("error")
            || l.contains("ERROR")
    }) {
        eprintln!("LEFT: {line}");
    }
    print(
        &out.join("sd15.manifest"),
        "SD 1.x as the vendored sd.cpp expects it",
        &model,
    );
    print(
        &out.join("sd15-controlnet.manifest"),
        "A ControlNet for SD 1.x as the vendored sd.cpp expects it",
        &control,
    );
    let params = |s: &Shapes| s.values().map(|ne| ne.iter().product::<u64>()).sum::<u64>();
    eprintln!(
        "model: {} tensors, {} params; control: {} tensors, {} params",
        model.len(),
        params(&model),
        control.len(),
        params(&control)
    );
}

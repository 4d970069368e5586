//! Re-derives `data/sdxs-512-ds.manifest` by asking sd.cpp which tensors an SDXS (512-DS) model must have.
//! Run: `cargo run -p diffugen-testkit --example derive_manifest > crates/testkit/data/sdxs-512-ds.manifest`
//!
//! sd.cpp detects SDXS from two seed tensors, then logs every tensor it is missing and, once they exist with a dummy
//! shape, the shape it expected for each. Those two passes are the whole manifest.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use diffugen_testkit::gguf::{self, DType, TensorInfo};

fn attempt(tensors: &[TensorInfo]) -> Vec<String> {
    let dir = std::env::temp_dir().join(format!("diffugen-manifest-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("probe.gguf");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    gguf::write(&mut file, &[], tensors, |i, w| {
        w.write_all(&vec![0u8; tensors[i].data_bytes() as usize])
    })
    .unwrap();
    drop(file);

    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    diffugen_sd::set_log_handler(move |_, text| sink.lock().unwrap().push(text.to_string()));
    let params = diffugen_sd::ContextParams {
        model_path: Some(path),
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

fn main() {
    let seed = [
        (
            "model.diffusion_model.input_blocks.0.0.weight",
            vec![3u64, 3, 4, 320],
        ),
        (
            "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight",
            vec![768, 49408],
        ),
    ];
    let mut shapes: BTreeMap<String, Vec<u64>> = seed
        .iter()
        .map(|(n, s)| (n.to_string(), s.clone()))
        .collect();
    let info = |shapes: &BTreeMap<String, Vec<u64>>| -> Vec<TensorInfo> {
        shapes
            .iter()
            .map(|(name, ne)| TensorInfo {
                name: name.clone(),
                ne: ne.clone(),
                dtype: DType::F16,
            })
            .collect()
    };

    for line in attempt(&info(&shapes)) {
        if let Some(name) = between(&line, "tensor '", "' not in model metadata") {
            shapes.entry(name.to_string()).or_insert_with(|| vec![1]);
        }
    }
    for line in attempt(&info(&shapes)) {
        if let (Some(name), Some(expected)) = (
            between(&line, "tensor '", "' has wrong shape"),
            between(&line, "expected [", "]"),
        ) {
            let mut ne: Vec<u64> = expected
                .split(',')
                .map(|d| d.trim().parse().unwrap())
                .collect();
            while ne.len() > 1 && ne.last() == Some(&1) {
                ne.pop();
            }
            shapes.insert(name.to_string(), ne);
        }
    }
    let leftover = attempt(&info(&shapes));
    assert!(
        !leftover
            .iter()
            .any(|l| l.contains("not in model metadata") || l.contains("wrong shape")),
        "the manifest is still incomplete"
    );
    println!("# SDXS (512-DS) as the vendored sd.cpp expects it: tensor name, then ggml dimensions (ne order).");
    for (name, ne) in &shapes {
        let dims: Vec<String> = ne.iter().map(u64::to_string).collect();
        println!("{name} {}", dims.join(","));
    }
}

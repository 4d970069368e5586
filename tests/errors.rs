//! Bad input gets a clear error naming the problem, a non-zero exit, and never a crash of the parent process.

mod support;

use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;

use support::{stderr, Workspace};

fn fails_with(ws: &Workspace, args: &[&str], expected: &[&str]) {
    let (events, output) = ws.generate_json(args);
    assert_eq!(
        output.status.code(),
        Some(1),
        "exit code for {args:?}; stderr: {}",
        stderr(&output)
    );
    assert_eq!(output.status.signal(), None, "the parent process crashed");
    let err = stderr(&output);
    for text in expected {
        assert!(
            err.contains(text),
            "stderr for {args:?} lacks '{text}': {err}"
        );
    }
    assert!(events.iter().all(|e| e.stage.name() != "done"));
}

#[test]
fn a_missing_model_is_named_with_the_models_that_exist() {
    let ws = Workspace::new();
    fails_with(
        &ws,
        &["--model", "nope", "--prompt", "x"],
        &["invalid model", "unknown model 'nope'", "tiny"],
    );
    fails_with(
        &ws,
        &["--model", "/no/such/file.gguf", "--prompt", "x"],
        &["model file not found: /no/such/file.gguf"],
    );
}

#[test]
fn a_truncated_model_file_is_reported_as_damaged() {
    let ws = Workspace::new();
    let mut source = std::fs::File::open(diffugen_testkit::test_model()).unwrap();
    let mut head = vec![0u8; 4 << 20];
    source.read_exact(&mut head).unwrap();
    let truncated = ws.models_dir().join("broken.gguf");
    std::fs::File::create(&truncated)
        .unwrap()
        .write_all(&head)
        .unwrap();
    fails_with(
        &ws,
        &["--model", "broken", "--prompt", "x"],
        &["broken.gguf cannot be used", "truncated"],
    );
}

#[test]
fn a_model_sd_cpp_rejects_fails_the_job_with_sd_cpps_reason() {
    use diffugen_testkit::gguf::{self, DType, TensorInfo};
    let ws = Workspace::new();
    // The two tensors that make sd.cpp see SDXS, and nothing else: our header check passes, sd.cpp refuses.
    let tensors = vec![
        TensorInfo {
            name: "model.diffusion_model.input_blocks.0.0.weight".into(),
            ne: vec![3, 3, 4, 320],
            dtype: DType::F16,
        },
        TensorInfo {
            name: "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"
                .into(),
            ne: vec![768, 8],
            dtype: DType::F16,
        },
    ];
    let mut file = std::fs::File::create(ws.models_dir().join("hollow.gguf")).unwrap();
    gguf::write(&mut file, &[], &tensors, |i, w| {
        w.write_all(&vec![0u8; tensors[i].data_bytes() as usize])
    })
    .unwrap();
    fails_with(
        &ws,
        &["--model", "hollow", "--prompt", "x"],
        &["could not load the model", "not in model metadata"],
    );
}

#[test]
fn an_unknown_sampler_lists_the_samplers_sd_cpp_knows() {
    let ws = Workspace::new();
    fails_with(
        &ws,
        &["--prompt", "x", "--sampler", "warp9"],
        &["invalid sampler", "'warp9'", "euler_a", "dpm++2m"],
    );
}

#[test]
fn a_width_sd_cpp_would_silently_change_is_refused_with_the_allowed_values() {
    let ws = Workspace::new();
    fails_with(
        &ws,
        &["--prompt", "x", "--width", "63"],
        &[
            "invalid width",
            "multiple of 64",
            "from 64 to 2048",
            "got 63",
        ],
    );
    // sd.cpp's UNet models need multiples of 64: it would round 72 up to 128 without a word.
    fails_with(
        &ws,
        &["--prompt", "x", "--width", "72"],
        &[
            "invalid width",
            "multiple of 64 (what sd.cpp needs for sdxs models)",
            "got 72",
        ],
    );
}

#[test]
fn zero_steps_are_refused_with_the_allowed_range() {
    let ws = Workspace::new();
    fails_with(
        &ws,
        &["--prompt", "x", "--steps", "0"],
        &["invalid steps", "from 1 to 150", "got 0"],
    );
}

#[test]
fn an_unknown_lora_is_named_in_flag_and_prompt_syntax() {
    let ws = Workspace::new();
    fails_with(
        &ws,
        &["--prompt", "x", "--lora", "ghost:0.5"],
        &["invalid loras", "unknown LoRA 'ghost'", "loras"],
    );
    fails_with(
        &ws,
        &["--prompt", "x <lora:phantom:0.8>"],
        &["unknown LoRA 'phantom'"],
    );
}

#[test]
fn every_invalid_field_is_reported_at_once() {
    let ws = Workspace::new();
    fails_with(
        &ws,
        &[
            "--prompt",
            "x",
            "--width",
            "70",
            "--steps",
            "151",
            "--cfg-scale",
            "99",
            "--seed",
            "-5",
            "--strength",
            "0.5",
        ],
        &[
            "invalid width",
            "invalid steps",
            "invalid cfg_scale",
            "invalid seed",
            "invalid strength",
        ],
    );
}

#[test]
fn a_resize_mode_that_is_not_one_or_without_an_init_image_is_refused_naming_the_flag() {
    let ws = Workspace::new();
    let init = ws.path("wide.png");
    image::RgbImage::new(128, 64).save(&init).unwrap();
    let init = init.display().to_string();
    for (args, says) in [
        (vec!["--resize-mode", "crop"], vec!["--init-image"]),
        (
            vec!["--init-image", &init, "--resize-mode", "sideways"],
            vec!["--resize-mode", "stretch, crop or fill"],
        ),
    ] {
        let mut all = vec!["generate", "-m", "tiny", "-p", "x"];
        all.extend(args);
        let output = ws.diffugen(&all);
        assert!(!output.status.success(), "{all:?}");
        let err = stderr(&output);
        for text in says {
            assert!(
                err.contains(text),
                "stderr for {all:?} lacks '{text}': {err}"
            );
        }
    }
}

//! Generating images through the `diffugen` CLI with the real sd.cpp and the small real test model.

mod support;

use diffugen_engine::output::{read_png_text, Record, PARAMETERS_KEY, RECORD_KEY};
use diffugen_engine::Stage;
use support::{outputs, pixels, stderr, Workspace};

#[test]
fn a_64x64_two_step_generation_writes_a_png_of_that_size_whose_parameters_read_back() {
    let ws = Workspace::new();
    let file = ws.path("fox.png");
    let (events, output) = ws.generate_json(&[
        "--prompt",
        "a red fox",
        "--negative-prompt",
        "blurry",
        "--seed",
        "7",
        "--output",
        file.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));

    let written = outputs(&events);
    assert_eq!(written.len(), 1);
    assert_eq!(written[0].path, file.display().to_string());
    assert_eq!(written[0].seed, 7);
    let image = pixels(&written[0].path);
    assert_eq!(image.dimensions(), (64, 64));

    let text = read_png_text(&file).unwrap();
    let parameters = &text
        .iter()
        .find(|(k, _)| k == PARAMETERS_KEY)
        .expect("A1111 parameters chunk")
        .1;
    assert!(
        parameters.starts_with("a red fox\nNegative prompt: blurry\n"),
        "{parameters}"
    );
    for field in [
        "Steps: 2",
        "Sampler: Euler",
        "CFG scale: 1",
        "Seed: 7",
        "Size: 64x64",
        "Model: tiny",
    ] {
        assert!(
            parameters.contains(field),
            "missing '{field}' in {parameters}"
        );
    }
    let record: Record = serde_json::from_str(
        &text
            .iter()
            .find(|(k, _)| k == RECORD_KEY)
            .expect("record")
            .1,
    )
    .unwrap();
    assert_eq!(
        (record.prompt.as_str(), record.negative_prompt.as_str()),
        ("a red fox", "blurry")
    );
    assert_eq!(
        (record.width, record.height, record.steps, record.seed),
        (64, 64, 2, 7)
    );
    assert_eq!(
        (
            record.model.as_str(),
            record.family.as_str(),
            record.sampler.as_str()
        ),
        ("tiny", "sdxs", "euler")
    );
}

#[test]
fn the_same_seed_gives_identical_pixels_and_another_seed_gives_different_pixels() {
    let ws = Workspace::new();
    let run = |seed: &str| {
        let (events, output) = ws.generate_json(&["--prompt", "a lighthouse", "--seed", seed]);
        assert!(output.status.success(), "{}", stderr(&output));
        pixels(&outputs(&events)[0].path)
    };
    let first = run("1234");
    let again = run("1234");
    let other = run("4321");
    assert!(first == again, "the same seed gave different pixels");
    assert!(first != other, "two different seeds gave identical pixels");
}

#[test]
fn progress_reports_phases_in_order_and_every_sampling_step_exactly_once() {
    let ws = Workspace::new();
    let (events, output) = ws.generate_json(&["--prompt", "a tree", "--steps", "3", "--seed", "3"]);
    assert!(output.status.success(), "{}", stderr(&output));

    // Phases in order (repeats collapsed). sd.cpp loads weights lazily in parts, so loading_model may return
    // inside later phases; everything else keeps its order.
    let mut phases: Vec<&str> = Vec::new();
    for event in events.iter().filter(|e| e.stage.name() != "loading_model") {
        if phases.last() != Some(&event.stage.name()) {
            phases.push(event.stage.name());
        }
    }
    assert_eq!(
        phases,
        [
            "queued",
            "plan",
            "encoding_prompt",
            "sampling",
            "decoding",
            "saving",
            "done"
        ]
    );

    let steps: Vec<u32> = events
        .iter()
        .filter_map(|e| match e.stage {
            Stage::Sampling { step, steps, .. } if step > 0 => {
                assert_eq!(steps, 3, "a sampling event reported {steps} steps");
                Some(step)
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        steps,
        [1, 2, 3],
        "each sampling step exactly once, in order"
    );

    // A cold first job loads weights, and no loading count is a step: loading events carry tensor counts.
    let loads: Vec<(u32, u32)> = events
        .iter()
        .filter_map(|e| match e.stage {
            Stage::LoadingModel {
                tensors_loaded,
                tensors_total,
                ..
            } => Some((tensors_loaded, tensors_total)),
            _ => None,
        })
        .collect();
    assert!(!loads.is_empty(), "a cold job reports loading_model");
    assert!(loads
        .iter()
        .all(|(done, total)| done <= total && *total > 3));
    assert!(events.last().unwrap().stage.is_final());
    assert_eq!(events.last().unwrap().percent, Some(100.0));
    let timed: Vec<f64> = events.iter().filter_map(|e| e.eta_seconds).collect();
    assert!(
        !timed.is_empty(),
        "an ETA is reported once a step has been measured"
    );
    assert!(events
        .windows(2)
        .all(|w| w[0].elapsed_seconds <= w[1].elapsed_seconds));
}

#[test]
fn without_an_output_flag_the_image_lands_in_the_data_dirs_outputs_folder_and_the_seed_is_printed()
{
    let ws = Workspace::new();
    let output = ws.diffugen(&[
        "generate",
        "-m",
        "tiny",
        "-p",
        "a small boat",
        "-W",
        "64",
        "-H",
        "64",
        "--steps",
        "1",
        "--threads",
        "2",
        "--count",
        "2",
        "--seed",
        "-1",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let printed: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(printed.len(), 2, "one path per image: {printed:?}");
    for path in &printed {
        assert!(
            path.starts_with(&ws.path("outputs").display().to_string()),
            "{path}"
        );
        assert!(
            path.ends_with(".png") && path.contains("a-small-boat"),
            "readable name: {path}"
        );
        assert_eq!(pixels(path).dimensions(), (64, 64));
    }
    assert_ne!(printed[0], printed[1], "collision-free names");
    let err = stderr(&output);
    assert!(err.contains("seed "), "the seed used is reported: {err}");
}

#[test]
fn img2img_and_inpainting_return_images_of_the_requested_size() {
    let ws = Workspace::new();
    let init = ws.path("init.png");
    image::RgbImage::from_fn(96, 80, |x, y| {
        image::Rgb([(x * 2) as u8, (y * 3) as u8, 128])
    })
    .save(&init)
    .unwrap();
    let mask = ws.path("mask.png");
    image::GrayImage::from_fn(64, 64, |x, _| image::Luma([if x < 32 { 255 } else { 0 }]))
        .save(&mask)
        .unwrap();

    let (events, output) = ws.generate_json(&[
        "--prompt",
        "a painting",
        "--init-image",
        init.to_str().unwrap(),
        "--strength",
        "0.6",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(pixels(&outputs(&events)[0].path).dimensions(), (64, 64));

    let (events, output) = ws.generate_json(&[
        "--prompt",
        "a painting",
        "--init-image",
        init.to_str().unwrap(),
        "--mask",
        mask.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let inpainted = pixels(&outputs(&events)[0].path);
    assert_eq!(inpainted.dimensions(), (64, 64));
}

#[test]
fn live_previews_arrive_during_sampling_as_png_frames() {
    use base64::Engine as _;
    let ws = Workspace::new();
    let (events, output) = ws.generate_json(&[
        "--prompt",
        "a comet",
        "--steps",
        "3",
        "--preview-every",
        "1",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let previews: Vec<(u32, Vec<u8>)> = events
        .iter()
        .filter_map(|e| match &e.stage {
            Stage::Preview {
                step, png_base64, ..
            } => Some((
                *step,
                base64::engine::general_purpose::STANDARD
                    .decode(png_base64)
                    .unwrap(),
            )),
            _ => None,
        })
        .collect();
    assert_eq!(
        previews.iter().map(|(step, _)| *step).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    for (_, png) in &previews {
        let frame = image::load_from_memory(png).expect("a preview is a PNG");
        assert!(frame.width() > 0 && frame.height() > 0);
    }
    let saving = events.iter().find(|e| e.stage.name() == "saving").unwrap();
    assert!(
        saving.percent.is_some(),
        "saving keeps the last measured percent"
    );
}

#[test]
fn models_convert_makes_a_q8_0_copy_that_is_listed_and_renders() {
    let ws = Workspace::new();
    let output = ws.diffugen(&["models", "convert", "tiny", "--type", "q8_0", "--json"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    assert_eq!(kinds.first(), Some(&"preview"));
    assert!(
        kinds.contains(&"started") && kinds.contains(&"progress"),
        "{kinds:?}"
    );
    let done = events
        .iter()
        .find(|e| e["event"] == "done")
        .expect("a done event");
    let expected = events[0]["preview"]["expected_bytes"].as_f64().unwrap();
    let bytes = done["bytes"].as_f64().unwrap();
    assert!(
        (bytes / expected - 1.0).abs() < 0.05,
        "estimated {expected}, wrote {bytes}"
    );
    assert_eq!(done["model_id"], "tiny-q8_0");
    assert!(ws.models_dir().join("tiny-q8_0.gguf").exists());
    // The copy reads as what it is, though sd.cpp kept the test model's convolutions (most of its weights) in f16.
    let copy = diffugen_models::inspect(&ws.models_dir().join("tiny-q8_0.gguf"));
    assert_eq!(copy.quantization.as_deref(), Some("q8_0"));
    assert!(!ws.models_dir().join("tiny-q8_0.gguf.part").exists());

    let (events, output) =
        ws.generate_json(&["--model", "tiny-q8_0", "--prompt", "a fox", "--seed", "5"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(pixels(&outputs(&events)[0].path).dimensions(), (64, 64));

    let again = ws.diffugen(&["models", "convert", "tiny", "--type", "q8_0"]);
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("already exists"),
        "{}",
        stderr(&again)
    );
    let bad = ws.diffugen(&["models", "convert", "tiny", "--type", "q9_9"]);
    assert!(
        stderr(&bad).contains("--type") && stderr(&bad).contains("q4_k"),
        "{}",
        stderr(&bad)
    );
    let part = ws.diffugen(&[
        "models", "convert", "tiny", "--type", "q4_0", "--part", "t5xxl",
    ]);
    assert!(
        stderr(&part).contains("single-file checkpoint"),
        "{}",
        stderr(&part)
    );
}

#[test]
fn a_hires_pass_doubles_the_size_reports_both_passes_steps_and_is_written_into_the_parameters() {
    let ws = Workspace::new();
    let file = ws.path("hires.png");
    let (events, output) = ws.generate_json(&[
        "--prompt",
        "a lighthouse",
        "--seed",
        "3",
        "--hires-scale",
        "2",
        "--hires-steps",
        "2",
        "--hires-denoise",
        "0.5",
        "--output",
        file.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let written = outputs(&events);
    assert_eq!(pixels(&written[0].path).dimensions(), (128, 128));
    assert_eq!((written[0].width, written[0].height), (128, 128));
    // Both passes' steps, once each and in order, counted out of both: the first pass's 2 of the planned 2 + 2,
    // then the hires pass's after them (as many as sd.cpp reports running), ending at the total.
    let steps: Vec<(u32, u32)> = events
        .iter()
        .filter_map(|e| match e.stage {
            Stage::Sampling { step, steps, .. } if step > 0 => Some((step, steps)),
            _ => None,
        })
        .collect();
    assert_eq!(&steps[..2], &[(1, 4), (2, 4)], "{steps:?}");
    assert!(steps.len() > 2, "no hires steps: {steps:?}");
    for (i, (step, _)) in steps.iter().enumerate() {
        assert_eq!(*step, i as u32 + 1, "{steps:?}");
    }
    let (last, total) = steps[steps.len() - 1];
    assert_eq!(last, total, "{steps:?}");
    // And each step says which pass it belongs to: pass 1 of 2 for the first two, pass 2 of 2 after.
    let passes: Vec<(u32, u32)> = events
        .iter()
        .filter_map(|e| match e.stage {
            Stage::Sampling {
                step, pass, passes, ..
            } if step > 0 => Some((pass, passes)),
            _ => None,
        })
        .collect();
    assert_eq!(&passes[..2], &[(1, 2), (1, 2)], "{passes:?}");
    assert!(passes[2..].iter().all(|p| *p == (2, 2)), "{passes:?}");
    let text = read_png_text(&file).unwrap();
    let parameters = &text.iter().find(|(k, _)| k == PARAMETERS_KEY).unwrap().1;
    for field in [
        "Size: 64x64",
        "Denoising strength: 0.5",
        "Hires upscale: 2",
        "Hires steps: 2",
        "Hires upscaler: Latent",
    ] {
        assert!(
            parameters.contains(field),
            "missing '{field}' in {parameters}"
        );
    }

    // A size beyond what the model takes is refused naming the flag's field, before any render.
    let (_, refused) = ws.generate_json(&["--prompt", "x", "--hires-scale", "40"]);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("hires.scale"),
        "{}",
        stderr(&refused)
    );
}

#[test]
fn an_embedding_in_the_embeddings_folder_is_applied_where_the_prompt_names_it_and_recorded() {
    use diffugen_testkit::gguf::DType::F32;
    let ws = Workspace::new();
    let prompt = ["--prompt", "a fox zqxemb in the snow", "--seed", "11"];
    let (plain, output) = ws.generate_json(&prompt);
    assert!(output.status.success(), "{}", support::stderr(&output));
    let plain = support::outputs(&plain)[0].path.clone();

    std::fs::create_dir_all(ws.path("models/embeddings")).unwrap();
    diffugen_testkit::write_test_embedding(&ws.path("models/embeddings/zqxemb.gguf"), 2, 7, F32)
        .unwrap();
    let (with, output) = ws.generate_json(&prompt);
    assert!(output.status.success(), "{}", support::stderr(&output));
    let with = support::outputs(&with)[0].path.clone();
    assert!(support::pixels(&plain) != support::pixels(&with));
    // Other vectors under the same name give another image: the embedding's own vectors are what the prompt reads.
    diffugen_testkit::write_test_embedding(&ws.path("models/embeddings/zqxemb.gguf"), 2, 8, F32)
        .unwrap();
    let (other, _) = ws.generate_json(&prompt);
    assert!(
        support::pixels(&with) != support::pixels(&support::outputs(&other)[0].path),
        "the embedding's vectors replace the word's tokens"
    );
    let record = diffugen_engine::output::read_png_text(std::path::Path::new(&with))
        .unwrap()
        .into_iter()
        .find(|(k, _)| k == "diffugen")
        .unwrap()
        .1;
    let record: serde_json::Value = serde_json::from_str(&record).unwrap();
    assert_eq!(record["embeddings"], serde_json::json!(["zqxemb"]));

    // A prompt that does not name it renders as before the embedding existed: nothing else changes.
    let (other_before, _) = ws.generate_json(&["--prompt", "a fox in the snow", "--seed", "11"]);
    std::fs::remove_file(ws.path("models/embeddings/zqxemb.gguf")).unwrap();
    let (other_after, _) = ws.generate_json(&["--prompt", "a fox in the snow", "--seed", "11"]);
    assert!(
        support::pixels(&support::outputs(&other_before)[0].path)
            == support::pixels(&support::outputs(&other_after)[0].path),
        "a prompt without the embedding's name is untouched by it"
    );

    // An f16 embedding would be read as garbage by sd.cpp: refused, naming it, before anything renders.
    diffugen_testkit::write_test_embedding(
        &ws.path("models/embeddings/halfemb.gguf"),
        1,
        3,
        diffugen_testkit::gguf::DType::F16,
    )
    .unwrap();
    let (_, output) = ws.generate_json(&["--prompt", "a fox halfemb"]);
    assert!(!output.status.success());
    let text = stderr(&output);
    assert!(
        text.contains("invalid prompt") && text.contains("'halfemb'") && text.contains("f16"),
        "{text}"
    );
}

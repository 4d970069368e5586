//! The creative tools beyond a plain render. Upscaling: a real (tiny) ESRGAN model in sd.cpp and Lanczos / nearest,
//! through the CLI, DiffuGen's job API and AUTOMATIC1111's extras routes — one queue, progress by tile, the result
//! keeping its source's parameters. Refine: one request to img2img a gallery image with its own prompt and seed.

mod support;

use std::sync::Arc;

use base64::Engine as _;
use diffugen_engine::{JobEvent, Stage};
use diffugen_gallery::Gallery;
use reqwest::StatusCode;
use serde_json::{json, Value};
use support::{stderr, Workspace};

fn size(path: &str) -> (u32, u32) {
    image::image_dimensions(path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn parameters(path: &str) -> String {
    diffugen_engine::output::read_png_text(std::path::Path::new(path))
        .unwrap()
        .into_iter()
        .find(|(k, _)| k == "parameters")
        .map(|(_, v)| v)
        .unwrap_or_default()
}

/// `diffugen upscale ... --json`: the events and the written file.
fn upscale_json(ws: &Workspace, args: &[&str]) -> (Vec<JobEvent>, String) {
    let mut all = vec!["upscale", "--json", "--threads", "2"];
    all.extend_from_slice(args);
    let output = ws.diffugen(&all);
    assert!(output.status.success(), "{}", stderr(&output));
    let events: Vec<JobEvent> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let path = support::outputs(&events)[0].path.clone();
    (events, path)
}

#[test]
fn the_cli_enlarges_an_image_with_an_esrgan_model_tile_by_tile_and_the_result_keeps_its_prompt() {
    let ws = Workspace::new().with_upscalers();
    let (events, _) = ws.generate_json(&["--prompt", "a lighthouse at dusk", "--seed", "5"]);
    let source = support::outputs(&events)[0].path.clone();

    // A ×4 model in 32-pixel tiles: a 64×64 image is several tiles, each reported as it is done.
    let (events, upscaled) = upscale_json(
        &ws,
        &[
            &source,
            "--upscaler",
            "tiny-esrgan-x4",
            "--scale",
            "4",
            "--tile-size",
            "32",
        ],
    );
    assert_eq!(size(&upscaled), (256, 256));
    let tiles: Vec<(u32, u32)> = events
        .iter()
        .filter_map(|e| match e.stage {
            Stage::Upscaling { tile, tiles, .. } if tile > 0 => Some((tile, tiles)),
            _ => None,
        })
        .collect();
    assert!(tiles.len() > 1, "progress by tile: {tiles:?}");
    let total = tiles[0].1;
    assert!(
        tiles.iter().all(|(_, of)| *of == total) && tiles.windows(2).all(|w| w[0].0 < w[1].0),
        "tiles count up to one total: {tiles:?}"
    );
    assert_eq!(tiles.last().unwrap().0, total);
    let percents: Vec<f64> = events.iter().filter_map(|e| e.percent).collect();
    assert!(percents.windows(2).all(|w| w[0] <= w[1]), "{percents:?}");

    // The result is the source's image made larger: its prompt and seed stay, the upscale is added.
    let text = parameters(&upscaled);
    assert!(text.starts_with("a lighthouse at dusk"), "{text}");
    assert!(text.contains("Seed: 5"), "{text}");
    assert!(
        text.contains("Postprocess upscale by: 4, Postprocess upscaler: tiny-esrgan-x4"),
        "{text}"
    );

    // The same model for ×2 (one pass, brought to size), the ×2 model, and Lanczos at a factor no model has.
    let (_, half) = upscale_json(
        &ws,
        &[&source, "--upscaler", "tiny-esrgan-x4", "--scale", "2"],
    );
    assert_eq!(size(&half), (128, 128));
    let (_, x2) = upscale_json(&ws, &[&source, "--upscaler", "tiny-esrgan-x2"]);
    assert_eq!(size(&x2), (128, 128));
    let (_, lanczos) = upscale_json(&ws, &[&source, "--scale", "2.5"]);
    assert_eq!(size(&lanczos), (160, 160));
    assert!(parameters(&lanczos).contains("Postprocess upscaler: Lanczos"));
    let (_, exact) = upscale_json(
        &ws,
        &[
            &source,
            "--upscaler",
            "nearest",
            "--width",
            "100",
            "--height",
            "90",
        ],
    );
    assert_eq!(size(&exact), (100, 90));

    // Every result is in the gallery, saying what it was made from.
    let gallery = Gallery::open(ws.data_dir()).unwrap();
    let page = gallery.list(&Default::default()).unwrap();
    let upscaled_entries: Vec<_> = page
        .entries
        .iter()
        .filter(|e| e.upscale.is_some())
        .collect();
    assert_eq!(upscaled_entries.len(), 5);
    let first = upscaled_entries
        .iter()
        .find(|e| e.path.ends_with(upscaled.rsplit('/').next().unwrap()))
        .unwrap();
    let link = first.upscale.as_ref().unwrap();
    assert_eq!(
        (link.upscaler.as_str(), link.scale, link.source_width),
        ("tiny-esrgan-x4", 4.0, 64)
    );
    assert_eq!(
        link.source_file.as_deref(),
        std::path::Path::new(&source)
            .file_name()
            .and_then(|n| n.to_str())
    );
    assert_eq!(first.prompt, "a lighthouse at dusk");
}

#[test]
fn a_pytorch_pth_upscaler_is_listed_and_enlarges_to_the_same_pixels_as_the_same_weights_in_gguf() {
    let ws = Workspace::new().with_upscalers();
    // The ×2 test upscaler's weights in a .pth as torch.save writes it (state dict under params_ema, as RealESRGAN's
    // releases): sd.cpp loads it; DiffuGen must read its tensor table to list it.
    let pth = ws.models_dir().join("ESRGAN/tiny-esrgan-pth-x2.pth");
    diffugen_testkit::build_test_upscaler_pth(&pth, 2).unwrap();
    let entries = diffugen_models::Library::new(ws.models_dir()).scan();
    let entry = entries
        .iter()
        .find(|e| e.id == "tiny-esrgan-pth-x2")
        .unwrap();
    assert_eq!(entry.error, None);
    assert_eq!(entry.format.as_deref(), Some("pytorch"));
    assert_eq!(entry.role, diffugen_models::Role::Upscaler);
    assert_eq!(entry.variant.as_deref(), Some("x2"));
    let gguf = entries.iter().find(|e| e.id == "tiny-esrgan-x2").unwrap();
    assert_eq!(entry.parameters, gguf.parameters);

    let (events, _) = ws.generate_json(&["--prompt", "a lighthouse at dusk", "--seed", "5"]);
    let source = support::outputs(&events)[0].path.clone();
    let (_, from_pth) = upscale_json(&ws, &[&source, "--upscaler", "tiny-esrgan-pth-x2"]);
    let (_, from_gguf) = upscale_json(&ws, &[&source, "--upscaler", "tiny-esrgan-x2"]);
    assert_eq!(size(&from_pth), (128, 128));
    assert!(
        support::pixels(&from_pth) == support::pixels(&from_gguf),
        "the .pth and the GGUF hold the same weights"
    );

    // A .pth cut short is listed as unusable, saying why, not offered.
    let bytes = std::fs::read(&pth).unwrap();
    let cut = ws.models_dir().join("ESRGAN/cut.pth");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let entries = diffugen_models::Library::new(ws.models_dir()).scan();
    let cut = entries.iter().find(|e| e.id == "cut").unwrap();
    assert!(cut.error.is_some(), "{cut:?}");
    assert!(!diffugen_models::Library::new(ws.models_dir())
        .upscalers()
        .iter()
        .any(|e| e.id == "cut"));
}

#[test]
fn an_unknown_upscaler_or_a_scale_out_of_range_is_refused_naming_the_flag_and_what_is_allowed() {
    let ws = Workspace::new().with_upscalers();
    let image = ws.path("in.png");
    image::RgbImage::new(32, 32).save(&image).unwrap();
    let image = image.display().to_string();

    let output = ws.diffugen(&["upscale", &image, "--upscaler", "4x-UltraSharp"]);
    assert!(!output.status.success());
    let text = stderr(&output);
    assert!(text.contains("--upscaler"), "{text}");
    assert!(text.contains("4x-UltraSharp"), "{text}");
    assert!(
        text.contains("tiny-esrgan-x2")
            && text.contains("tiny-esrgan-x4")
            && text.contains("lanczos"),
        "the allowed names are listed: {text}"
    );

    let output = ws.diffugen(&["upscale", &image, "--scale", "9"]);
    assert!(!output.status.success());
    assert!(stderr(&output).contains("--scale"), "{}", stderr(&output));

    let output = ws.diffugen(&["upscale", &image, "--width", "16", "--height", "16"]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("only enlarges"),
        "{}",
        stderr(&output)
    );

    let not_an_image = ws.path("notes.png");
    std::fs::write(&not_an_image, "hello").unwrap();
    let output = ws.diffugen(&["upscale", &not_an_image.display().to_string()]);
    assert!(!output.status.success());
    assert!(stderr(&output).contains("notes.png"), "{}", stderr(&output));
}

/// The HTTP API over a queue that records in the workspace's gallery.
async fn serve(ws: &Workspace) -> (diffugen_server::ServerHandle, String, Arc<Gallery>) {
    let gallery = Arc::new(Gallery::open(ws.data_dir()).unwrap());
    let jobs = diffugen_jobs::JobManager::start(
        Arc::new(support::engine()),
        diffugen_jobs::JobOptions {
            depth: 8,
            orchestrator: None,
            gallery: Some(gallery.clone()),
            defaults: diffugen_jobs::JobDefaults {
                threads: Some(2),
                ..Default::default()
            },
            store: None,
        },
    );
    let (server, base) = support::serve_api(ws, jobs).await;
    (server, base, gallery)
}

async fn post(client: &reqwest::Client, url: String, body: Value) -> (StatusCode, Value) {
    let response = client.post(url).json(&body).send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Follows a job to its end over SSE; returns its events as text and its first image's gallery id.
async fn finish(client: &reqwest::Client, base: &str, id: &str) -> (String, u32) {
    let events = client
        .get(format!("{base}/api/v1/jobs/{id}/events"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(events.contains("event: done"), "{events}");
    let info = support::get_json(client, format!("{base}/api/v1/jobs/{id}")).await;
    let gallery_id = info["outputs"][0]["gallery_id"].as_u64().unwrap() as u32;
    (events, gallery_id)
}

fn png_b64(width: u32, height: u32) -> String {
    let mut bytes = std::io::Cursor::new(Vec::new());
    image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x * 5) as u8, (y * 5) as u8, 60])
    })
    .write_to(&mut bytes, image::ImageFormat::Png)
    .unwrap();
    base64::engine::general_purpose::STANDARD.encode(bytes.into_inner())
}

/// An image an answer carried as base64.
fn decoded(b64: &str) -> image::DynamicImage {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    image::load_from_memory(&bytes).unwrap()
}

fn decoded_size(b64: &str) -> (u32, u32) {
    let image = decoded(b64);
    (image.width(), image.height())
}

#[tokio::test(flavor = "multi_thread")]
async fn a1111_extras_enlarge_with_the_listed_upscalers_and_refuse_what_diffugen_cannot_do() {
    let _gpu = support::ONE_AT_A_TIME.lock().await;
    let ws = Workspace::new().with_upscalers();
    let (server, base, _) = serve(&ws).await;
    let client = reqwest::Client::new();

    // What a webui client offers: None, the resamplers and the ESRGAN models with their factor.
    let list = support::get_json(&client, format!("{base}/sdapi/v1/upscalers")).await;
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "None",
            "Lanczos",
            "Nearest",
            "tiny-esrgan-x2",
            "tiny-esrgan-x4"
        ]
    );
    assert_eq!(list[3]["scale"], 2);
    assert_eq!(list[4]["scale"], 4);

    // webuiapi's extra_single_image: resize_mode 0 with upscaling_resize, upscaler_1 by name.
    let (status, body) = post(
        &client,
        format!("{base}/sdapi/v1/extra-single-image"),
        json!({"image": png_b64(48, 32), "resize_mode": 0, "show_extras_results": true,
               "gfpgan_visibility": 0, "codeformer_visibility": 0, "codeformer_weight": 0,
               "upscaling_resize": 4, "upscaling_crop": true, "upscaler_1": "tiny-esrgan-x4",
               "upscaler_2": "None", "extras_upscaler_2_visibility": 0, "upscale_first": false}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(decoded_size(body["image"].as_str().unwrap()), (192, 128));
    assert!(body["html_info"]
        .as_str()
        .unwrap()
        .contains("tiny-esrgan-x4"));

    // extra_batch_images to an exact size with Lanczos: every image comes back at it.
    let (status, body) = post(
        &client,
        format!("{base}/sdapi/v1/extra-batch-images"),
        json!({"imageList": [{"data": png_b64(40, 20), "name": "a.png"}, {"data": png_b64(40, 20), "name": "b.png"}],
               "resize_mode": 1, "upscaling_resize_w": 100, "upscaling_resize_h": 50, "upscaler_1": "Lanczos"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let images = body["images"].as_array().unwrap();
    assert_eq!(images.len(), 2);
    for image in images {
        assert_eq!(decoded_size(image.as_str().unwrap()), (100, 50));
    }

    // What DiffuGen cannot do is refused by name (A1111's 422), never silently skipped.
    for (field, extra) in [
        ("gfpgan_visibility", json!({"gfpgan_visibility": 0.5})),
        ("codeformer_visibility", json!({"codeformer_visibility": 1})),
        (
            "upscaler_2",
            json!({"upscaler_2": "Lanczos", "extras_upscaler_2_visibility": 0.5}),
        ),
        ("upscaler_1", json!({"upscaler_1": "R-ESRGAN 4x+"})),
        ("upscaling_resize", json!({"upscaling_resize": 12})),
        (
            "upscaling_crop",
            json!({"resize_mode": 1, "upscaling_resize_w": 100, "upscaling_resize_h": 100}),
        ),
    ] {
        let mut request = json!({"image": png_b64(48, 32), "upscaler_1": "Lanczos"});
        for (k, v) in extra.as_object().unwrap() {
            request[k] = v.clone();
        }
        let (status, body) = post(
            &client,
            format!("{base}/sdapi/v1/extra-single-image"),
            request,
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{field}: {body}");
        let detail = body["detail"].as_str().unwrap_or_default();
        assert!(detail.starts_with(field), "{field}: {body}");
    }
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_upscales_through_a_running_server_and_the_result_is_recorded_there() {
    let _gpu = support::ONE_AT_A_TIME.lock().await;
    let ws = Workspace::new().with_upscalers();
    let (events, _) = ws.generate_json(&["--prompt", "a lighthouse at dusk", "--seed", "5"]);
    let source = support::outputs(&events)[0].path.clone();
    let (server, base, gallery) = serve(&ws).await;
    let cli = |args: Vec<String>| {
        let data = ws.data_dir().to_path_buf();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(support::diffugen_bin())
                .arg("--data-dir")
                .arg(&data)
                .arg("upscale")
                .args(&args)
                .output()
                .unwrap()
        })
    };
    let output = cli(vec![
        "--server".into(),
        base.clone(),
        "--json".into(),
        source.clone(),
        "--upscaler".into(),
        "tiny-esrgan-x2".into(),
    ])
    .await
    .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let printed: Vec<JobEvent> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        printed
            .iter()
            .any(|e| matches!(e.stage, Stage::Upscaling { tile, .. } if tile > 0)),
        "progress by tile reaches the CLI: {printed:?}"
    );
    let Some(Stage::Done { outputs }) = printed.last().map(|e| e.stage.clone()) else {
        panic!("the CLI did not print the end: {printed:?}");
    };
    assert_eq!(size(&outputs[0].path), (128, 128));
    // The server recorded it in its gallery with the source's prompt, and the job was the CLI's.
    let entry = gallery.get(outputs[0].gallery_id.unwrap()).unwrap();
    assert_eq!(entry.prompt, "a lighthouse at dusk");
    assert_eq!(entry.upscale.as_ref().unwrap().upscaler, "tiny-esrgan-x2");
    let job = support::get_json(
        &reqwest::Client::new(),
        format!("{base}/api/v1/jobs/{}", printed[0].job_id),
    )
    .await;
    assert_eq!(job["source"], "cli", "{job}");

    // The server's refusal names the field; a local-only flag is refused before anything is sent.
    let output = cli(vec![
        "--server".into(),
        base.clone(),
        source.clone(),
        "--upscaler".into(),
        "R-ESRGAN 4x+".into(),
    ])
    .await
    .unwrap();
    assert!(!output.status.success());
    let said = stderr(&output);
    assert!(
        said.contains("upscaler") && said.contains("tiny-esrgan-x2"),
        "{said}"
    );
    let output = cli(vec![
        "--server".into(),
        base.clone(),
        source.clone(),
        "--output".into(),
        "big.png".into(),
    ])
    .await
    .unwrap();
    assert!(!output.status.success());
    assert!(stderr(&output).contains("--output"), "{}", stderr(&output));
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_init_image_of_another_shape_is_stretched_cropped_or_fitted_as_each_dialect_asks() {
    let _gpu = support::ONE_AT_A_TIME.lock().await;
    let ws = Workspace::new();
    let (server, base, gallery) = serve(&ws).await;
    let client = reqwest::Client::new();
    let wide = png_b64(128, 64);
    // The job API: the same seed and init image, three ways to bring it to 64×64.
    let mut pixels = Vec::new();
    for mode in ["stretch", "crop", "fill"] {
        let (status, job) = post(
            &client,
            format!("{base}/api/v1/jobs"),
            json!({"model": "tiny", "prompt": "a field", "width": 64, "height": 64, "steps": 2, "seed": 9,
                   "init_image": {"base64": wide}, "strength": 0.3, "resize_mode": mode}),
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{mode}: {job}");
        let (_, id) = finish(&client, &base, job["id"].as_str().unwrap()).await;
        pixels.push(support::pixels(&gallery.get(id).unwrap().path));
    }
    assert!(pixels[0] != pixels[1] && pixels[1] != pixels[2] && pixels[0] != pixels[2]);
    let (status, answer) = post(
        &client,
        format!("{base}/api/v1/jobs"),
        json!({"model": "tiny", "prompt": "x", "width": 64, "height": 64, "resize_mode": "crop"}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(answer["error"]["param"], "resize_mode", "{answer}");

    // A1111's img2img: resize_mode 1 ("Crop and resize") is the job API's crop; 3 (a latent upscale) is refused.
    let (status, body) = post(
        &client,
        format!("{base}/sdapi/v1/img2img"),
        json!({"prompt": "a field", "width": 64, "height": 64, "steps": 2, "seed": 9, "init_images": [wide],
               "denoising_strength": 0.3, "resize_mode": 1, "sampler_name": "Euler a",
               "override_settings": {"sd_model_checkpoint": "tiny"}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(decoded_size(body["images"][0].as_str().unwrap()), (64, 64));
    for (mode, says) in [
        (json!(3), "latent upscale"),
        (json!("Sideways"), "must be 0"),
    ] {
        let (status, answer) = post(
            &client,
            format!("{base}/sdapi/v1/img2img"),
            json!({"prompt": "x", "width": 64, "height": 64, "init_images": [wide], "resize_mode": mode}),
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
        let detail = answer["detail"].as_str().unwrap();
        assert!(
            detail.starts_with("resize_mode") && detail.contains(says),
            "{detail}"
        );
    }
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn each_image_records_which_client_asked_and_its_wait_apart_from_its_render_time() {
    let _gpu = support::ONE_AT_A_TIME.lock().await;
    let ws = Workspace::new();
    let (server, base, gallery) = serve(&ws).await;
    let client = reqwest::Client::new();
    let (status, body) = post(
        &client,
        format!("{base}/v1/images/generations"),
        json!({"model": "tiny", "prompt": "a fox through openai", "size": "64x64", "steps": 2}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = post(
        &client,
        format!("{base}/sdapi/v1/txt2img"),
        json!({"prompt": "a fox through a1111", "width": 64, "height": 64, "steps": 2,
               "override_settings": {"sd_model_checkpoint": "tiny"}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, job) = post(
        &client,
        format!("{base}/api/v1/jobs"),
        json!({"model": "tiny", "prompt": "a fox through the job api", "width": 64, "height": 64, "steps": 2}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let (_, id) = finish(&client, &base, job["id"].as_str().unwrap()).await;
    let native = gallery.get(id).unwrap();
    let entries = gallery.list(&Default::default()).unwrap().entries;
    let client_of = |prompt: &str| {
        entries
            .iter()
            .find(|e| e.prompt == prompt)
            .and_then(|e| e.client.clone())
    };
    assert_eq!(client_of("a fox through openai").as_deref(), Some("openai"));
    assert_eq!(
        client_of("a fox through a1111").as_deref(),
        Some("a1111-txt2img")
    );
    assert_eq!(native.client.as_deref(), Some("api"));
    // The wait is recorded apart: render time and wait together are about the job's whole life.
    let (waited, took) = (
        native.queue_seconds.unwrap(),
        native.generation_seconds.unwrap(),
    );
    assert!(waited >= 0.0 && took > 0.0, "waited {waited}, took {took}");
    // The gallery's API says so too.
    let listed = support::get_json(&client, format!("{base}/api/v1/gallery/{id}")).await;
    assert_eq!(listed["client"], "api", "{listed}");
    assert!(listed["queue_seconds"].is_number(), "{listed}");
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hires_pass_enlarges_with_an_esrgan_model_named_as_a1111_and_the_job_api_name_it() {
    let _gpu = support::ONE_AT_A_TIME.lock().await;
    let ws = Workspace::new().with_upscalers();
    let (server, base, gallery) = serve(&ws).await;
    let client = reqwest::Client::new();

    // An A1111 client picks the hires upscaler from /sdapi/v1/upscalers: an ESRGAN model by its name.
    let (status, body) = post(
        &client,
        format!("{base}/sdapi/v1/txt2img"),
        json!({"prompt": "a lighthouse", "width": 64, "height": 64, "steps": 2, "seed": 5,
               "enable_hr": true, "hr_scale": 2, "hr_upscaler": "tiny-esrgan-x2",
               "hr_second_pass_steps": 1, "denoising_strength": 0.5}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        decoded_size(body["images"][0].as_str().unwrap()),
        (128, 128)
    );
    let info: Value = serde_json::from_str(body["info"].as_str().unwrap()).unwrap();
    let infotext = info["infotexts"][0].as_str().unwrap();
    assert!(
        infotext.contains("Hires upscaler: tiny-esrgan-x2"),
        "{infotext}"
    );
    let entry = gallery.list(&Default::default()).unwrap().entries[0].clone();
    assert_eq!((entry.width, entry.height), (128, 128));
    let texts = diffugen_engine::output::read_png_text(std::path::Path::new(&entry.path)).unwrap();
    assert!(
        texts.iter().any(|(_, v)| v.contains("tiny-esrgan-x2")),
        "{texts:?}"
    );
    let models = ws.path("models").display().to_string();
    assert!(
        texts.iter().all(|(_, v)| !v.contains(&models)),
        "the record names a local file: {texts:?}"
    );

    // The job API: `hires.model`; a x4 model to a x2 target comes out at the target.
    let (status, job) = post(
        &client,
        format!("{base}/api/v1/jobs"),
        json!({"model": "tiny", "prompt": "a lighthouse", "width": 64, "height": 64, "steps": 2,
               "hires": {"scale": 2, "model": "TINY-ESRGAN-X4", "steps": 1}}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let (_, id) = finish(&client, &base, job["id"].as_str().unwrap()).await;
    let image = image::open(gallery.get(id).unwrap().path).unwrap();
    assert_eq!((image.width(), image.height()), (128, 128));

    // Its remix asks for the first pass's size and the same hires pass, and renders the same image again.
    let remix = support::get_json(&client, format!("{base}/api/v1/gallery/{id}/remix")).await;
    assert_eq!(
        (&remix["width"], &remix["height"]),
        (&json!(64), &json!(64)),
        "{remix}"
    );
    assert_eq!(remix["hires"]["model"], "tiny-esrgan-x4", "{remix}");
    assert_eq!(
        (
            &remix["hires"]["width"],
            &remix["hires"]["upscaler"],
            &remix["hires"]["steps"]
        ),
        (&json!(128), &json!("model"), &json!(1)),
        "{remix}"
    );
    let (status, job) = post(&client, format!("{base}/api/v1/jobs"), remix).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let (_, again) = finish(&client, &base, job["id"].as_str().unwrap()).await;
    let original = gallery.get(id).unwrap();
    assert!(
        support::pixels(&gallery.get(again).unwrap().path) == support::pixels(&original.path),
        "the remix renders the same image"
    );
    // A refine repaints the finished picture at its own size: no second hires pass on top.
    let (status, job) = post(
        &client,
        format!("{base}/api/v1/gallery/{id}/refine"),
        json!({"strength": 0.3}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let (events, refined) = finish(&client, &base, job["id"].as_str().unwrap()).await;
    let refined = gallery.get(refined).unwrap();
    assert_eq!((refined.width, refined.height), (128, 128));
    assert!(!events.contains("\"pass\":2"), "no hires pass: {events}");

    // A model that is not there, or a model beside another upscaler, is refused by name.
    for (field, hires) in [
        ("hires.model", json!({"scale": 2, "model": "R-ESRGAN 4x+"})),
        (
            "hires.model",
            json!({"scale": 2, "upscaler": "lanczos", "model": "tiny-esrgan-x2"}),
        ),
        ("hires.model", json!({"scale": 2, "upscaler": "model"})),
    ] {
        let (status, answer) = post(
            &client,
            format!("{base}/api/v1/jobs"),
            json!({"model": "tiny", "prompt": "x", "width": 64, "height": 64, "hires": hires}),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{field}: {answer}");
        assert_eq!(answer["error"]["param"], field, "{answer}");
    }
    let (status, answer) = post(
        &client,
        format!("{base}/sdapi/v1/txt2img"),
        json!({"prompt": "x", "width": 64, "height": 64, "enable_hr": true, "hr_upscaler": "R-ESRGAN 4x+"}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    let detail = answer["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("hr_upscaler") && detail.contains("tiny-esrgan-x2"),
        "{detail}"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upscale_of_a_gallery_image_is_a_job_whose_result_is_recorded_and_linked_to_its_source()
{
    let _gpu = support::ONE_AT_A_TIME.lock().await;
    let ws = Workspace::new().with_upscalers();
    let (server, base, gallery) = serve(&ws).await;
    let client = reqwest::Client::new();

    let (status, job) = post(
        &client,
        format!("{base}/api/v1/jobs"),
        json!({"model": "tiny", "prompt": "a red boat", "width": 64, "height": 64, "steps": 2, "seed": 9}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    finish(&client, &base, job["id"].as_str().unwrap()).await;
    let source = gallery.list(&Default::default()).unwrap().entries[0].clone();

    let (status, job) = post(
        &client,
        format!("{base}/api/v1/upscale"),
        json!({"gallery_id": source.id, "upscaler": "tiny-esrgan-x2", "tile_size": 32}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    assert_eq!(job["model"], "tiny-esrgan-x2");
    assert_eq!(job["prompt"], "a red boat");
    let (events, gallery_id) = finish(&client, &base, job["id"].as_str().unwrap()).await;
    assert!(events.contains("event: upscaling"), "{events}");
    let entry = gallery.get(gallery_id).unwrap();
    assert_eq!((entry.width, entry.height), (128, 128));
    assert_eq!(entry.prompt, "a red boat");
    assert_eq!(entry.seed, Some(9));
    let link = entry.upscale.unwrap();
    assert_eq!(link.source_id, Some(source.id));
    assert_eq!(link.upscaler, "tiny-esrgan-x2");

    // Bad requests name their field.
    for (field, body) in [
        ("image", json!({"upscaler": "lanczos"})),
        (
            "image",
            json!({"image": png_b64(8, 8), "gallery_id": source.id}),
        ),
        ("gallery_id", json!({"gallery_id": 999_999})),
        (
            "upscaler",
            json!({"image": png_b64(8, 8), "upscaler": "nope"}),
        ),
        ("scale", json!({"image": png_b64(8, 8), "scale": 0.5})),
        ("denoise", json!({"image": png_b64(8, 8), "denoise": 1})),
    ] {
        let (status, answer) = post(&client, format!("{base}/api/v1/upscale"), body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{field}: {answer}");
        assert_eq!(answer["error"]["param"], field, "{answer}");
    }
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn refine_img2imgs_a_gallery_image_with_its_own_prompt_and_seed_at_the_chosen_strength() {
    let _gpu = support::ONE_AT_A_TIME.lock().await;
    let ws = Workspace::new();
    let (server, base, gallery) = serve(&ws).await;
    let client = reqwest::Client::new();
    let (status, job) = post(
        &client,
        format!("{base}/api/v1/jobs"),
        json!({"model": "tiny", "prompt": "an old tower", "negative_prompt": "fog", "width": 64, "height": 64,
               "steps": 4, "seed": 21}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let wait = |id: String| {
        let (client, base) = (client.clone(), base.clone());
        async move { finish(&client, &base, &id).await.1 }
    };
    let source = wait(job["id"].as_str().unwrap().to_string()).await;

    let (status, job) = post(
        &client,
        format!("{base}/api/v1/gallery/{source}/refine"),
        json!({"strength": 0.5}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let refined = gallery
        .get(wait(job["id"].as_str().unwrap().to_string()).await)
        .unwrap();
    let original = gallery.get(source).unwrap();
    assert_eq!(refined.prompt, "an old tower");
    assert_eq!(refined.negative_prompt, "fog");
    assert_eq!(refined.seed, Some(21));
    assert_eq!(refined.strength, Some(0.5));
    assert!(
        refined.init_image.is_some(),
        "the source is kept as its init image"
    );
    assert!(
        support::pixels(&refined.path) != support::pixels(&original.path),
        "a refine repaints the image"
    );

    // Without a body: the default strength. Bad requests name their field.
    let (status, job) = post(
        &client,
        format!("{base}/api/v1/gallery/{source}/refine"),
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let again = gallery
        .get(wait(job["id"].as_str().unwrap().to_string()).await)
        .unwrap();
    assert_eq!(again.strength, Some(0.35));
    for (body, field) in [
        (json!({"strength": 0}), "strength"),
        (json!({"strength": 1.5}), "strength"),
        (json!({"strenght": 0.5}), "strenght"),
    ] {
        let (status, answer) = post(
            &client,
            format!("{base}/api/v1/gallery/{source}/refine"),
            body,
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        assert_eq!(answer["error"]["param"], field, "{answer}");
    }
    let (status, _) = post(
        &client,
        format!("{base}/api/v1/gallery/99999/refine"),
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn controlnet_clients_get_canny_maps_and_their_models_and_a_controlnet_render_is_refused_not_skipped(
) {
    let _gpu = support::ONE_AT_A_TIME.lock().await;
    let ws = Workspace::new();
    // A ControlNet file as sd-webui-controlnet names its tensors (header only: listing reads no weights).
    std::fs::create_dir_all(ws.path("models/controlnet")).unwrap();
    diffugen_testkit::gguf::write_sparse(
        &ws.path("models/controlnet/control_v11p_sd15_canny.gguf"),
        &[diffugen_testkit::gguf::TensorInfo {
            name: "control_model.input_hint_block.0.weight".into(),
            ne: vec![3, 3, 3, 16],
            dtype: diffugen_testkit::gguf::DType::F16,
        }],
    )
    .unwrap();
    let (server, base, _) = serve(&ws).await;
    let client = reqwest::Client::new();
    let get = |path: &str| {
        let request = client.get(format!("{base}{path}"));
        async move { request.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    assert_eq!(
        get("/controlnet/model_list").await["model_list"],
        json!(["control_v11p_sd15_canny"])
    );
    let modules = get("/controlnet/module_list").await;
    assert_eq!(modules["module_list"], json!(["none", "canny"]));

    // What a client's preview of the canny map asks for: the map at the preprocessor's resolution, edges on black.
    let (status, body) = post(
        &client,
        format!("{base}/controlnet/detect"),
        json!({"controlnet_module": "canny", "controlnet_input_images": [png_b64(96, 64)],
               "controlnet_processor_res": 128, "controlnet_threshold_a": 100, "controlnet_threshold_b": 200}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let map = decoded(body["images"][0].as_str().unwrap()).to_luma8();
    assert_eq!((map.width(), map.height()), (192, 128));
    assert!(map.pixels().any(|p| p.0[0] > 128), "the map has edges");
    assert!(map.pixels().any(|p| p.0[0] == 0), "and background");

    for (field, request) in [
        (
            "controlnet_module",
            json!({"controlnet_module": "depth_midas", "controlnet_input_images": [png_b64(8, 8)]}),
        ),
        (
            "controlnet_threshold_a",
            json!({"controlnet_module": "canny", "controlnet_input_images": [png_b64(8, 8)], "controlnet_threshold_a": 300}),
        ),
        (
            "controlnet_input_images",
            json!({"controlnet_module": "canny"}),
        ),
        (
            "controlnet_input_images[0]",
            json!({"controlnet_module": "canny", "controlnet_input_images": ["bm90IGFuIGltYWdl"]}),
        ),
    ] {
        let (status, body) = post(&client, format!("{base}/controlnet/detect"), request).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{field}: {body}");
        assert!(
            body["detail"]
                .as_str()
                .unwrap_or_default()
                .starts_with(field),
            "{field}: {body}"
        );
    }

    // A unit the model cannot take (the SDXS test model is no SD 1.x) is refused by name; an empty or disabled one
    // changes nothing.
    let txt2img = |scripts: Value| json!({"prompt": "a gate", "width": 64, "height": 64, "steps": 1, "alwayson_scripts": scripts});
    let (status, body) = post(
        &client,
        format!("{base}/sdapi/v1/txt2img"),
        txt2img(
            json!({"controlnet": {"args": [{"module": "canny", "model": "control_v11p_sd15_canny",
                                                "image": png_b64(64, 64), "weight": 1.0}]}}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .starts_with("alwayson_scripts.controlnet"),
        "{body}"
    );
    let (status, body) = post(
        &client,
        format!("{base}/sdapi/v1/txt2img"),
        txt2img(json!({"controlnet": {"args": [{"enabled": false, "module": "canny"}]}})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = post(
        &client,
        format!("{base}/sdapi/v1/txt2img"),
        txt2img(json!({})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    server.shutdown().await.unwrap();
}

/// A picture with clear edges: a bright square on a dark ground, at `width` × `height`.
fn square_b64(width: u32, height: u32) -> String {
    let mut bytes = std::io::Cursor::new(Vec::new());
    image::RgbImage::from_fn(width, height, |x, y| {
        let inside =
            (width / 4..3 * width / 4).contains(&x) && (height / 4..3 * height / 4).contains(&y);
        image::Rgb(if inside {
            [230, 220, 200]
        } else {
            [20, 30, 40]
        })
    })
    .write_to(&mut bytes, image::ImageFormat::Png)
    .unwrap();
    base64::engine::general_purpose::STANDARD.encode(bytes.into_inner())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_controlnet_steers_an_sd1_render_in_every_dialect_and_a_new_control_image_keeps_the_model_loaded(
) {
    let _gpu = support::ONE_AT_A_TIME.lock().await;
    let ws = Workspace::new().with_sd15_controlnet();
    let (server, base, gallery) = serve(&ws).await;
    let client = reqwest::Client::new();
    // Runs a job through the job API; returns its events as text and the written image's gallery entry.
    let run = |body: Value| {
        let client = client.clone();
        let base = base.clone();
        let gallery = gallery.clone();
        async move {
            let (status, job) = post(&client, format!("{base}/api/v1/jobs"), body).await;
            assert_eq!(status, StatusCode::ACCEPTED, "{job}");
            let (events, gallery_id) = finish(&client, &base, job["id"].as_str().unwrap()).await;
            let entry = gallery.get(gallery_id).unwrap();
            (events, entry)
        }
    };
    let base_request = json!({"model": "sd15-test", "prompt": "a stone gate", "width": 64, "height": 64,
                              "steps": 2, "seed": 5, "threads": 2});
    let with_control = |image: String| {
        let mut request = base_request.clone();
        request["control"] =
            json!({"model": "test-control", "image": {"base64": image}, "module": "canny"});
        request
    };
    let (plain_events, plain) = run(base_request.clone()).await;
    let (steered_events, steered) = run(with_control(square_b64(64, 64))).await;
    // The memory plan counts the ControlNet's weights (its file is about 0.72 GB) beside the diffusion model's.
    let ram_peak = |events: &str| -> f64 {
        let data = events
            .split("event: plan\ndata: ")
            .nth(1)
            .and_then(|rest| rest.lines().next())
            .expect("a plan event");
        serde_json::from_str::<Value>(data).unwrap()["plan"]["estimated_ram_peak_bytes"]
            .as_f64()
            .unwrap()
    };
    let extra = ram_peak(&steered_events) - ram_peak(&plain_events);
    assert!(
        (0.6e9..1.0e9).contains(&extra),
        "the plan adds the ControlNet's weights: {extra} bytes"
    );
    assert!(
        support::pixels(&plain.path) != support::pixels(&steered.path),
        "the control map changes the render at the same seed"
    );
    let text = parameters(&steered.path);
    assert!(
        text.contains("ControlNet 0: \"Module: canny, Model: test-control, Weight: 1\""),
        "{text}"
    );

    // Its remix carries the control map the render used (already through canny) and renders the same image again.
    let remix = support::get_json(
        &client,
        format!("{base}/api/v1/gallery/{}/remix", steered.id),
    )
    .await;
    assert_eq!(
        (&remix["control"]["model"], &remix["control"]["module"]),
        (&json!("test-control"), &json!("none")),
        "{remix}"
    );
    let (_, remixed) = run(remix).await;
    assert!(
        support::pixels(&remixed.path) == support::pixels(&steered.path),
        "the remix renders the same image"
    );

    // Another control image on the same ControlNet: the model stays loaded, only the map changes.
    let bar = {
        let mut bytes = std::io::Cursor::new(Vec::new());
        image::RgbImage::from_fn(64, 64, |x, _| {
            image::Rgb(if x < 20 { [255; 3] } else { [0; 3] })
        })
        .write_to(&mut bytes, image::ImageFormat::Png)
        .unwrap();
        base64::engine::general_purpose::STANDARD.encode(bytes.into_inner())
    };
    let (events, moved) = run(with_control(bar)).await;
    assert!(
        !events.contains("event: loading_model"),
        "a new control image reuses the loaded model: {events}"
    );
    assert!(support::pixels(&moved.path) != support::pixels(&steered.path));

    // sd-webui-controlnet's unit in an A1111 txt2img, as older webuiapi releases' ControlNetUnit(...).to_dict() build
    // it (input_image, "Resize and Fill", the deprecated guidance 1.0, lowvram, a null mask; the current release
    // itself runs in scripts/webuiapi-check.sh): the same render as the job API's.
    let (status, body) = post(
        &client,
        format!("{base}/sdapi/v1/txt2img"),
        json!({"prompt": "a stone gate", "width": 64, "height": 64, "steps": 2, "seed": 5,
               "sampler_name": steered.sampler.clone().unwrap_or_default(),
               "cfg_scale": steered.cfg_scale,
               "override_settings": {"sd_model_checkpoint": "sd15-test"},
               "alwayson_scripts": {"controlnet": {"args": [{
                   "input_image": square_b64(64, 64), "mask": null, "module": "canny",
                   "model": "test-control [0123abcd]", "weight": 1.0, "resize_mode": "Resize and Fill",
                   "lowvram": false, "processor_res": 64, "threshold_a": 100, "threshold_b": 200,
                   "guidance": 1.0, "guidance_start": 0.0, "guidance_end": 1.0, "control_mode": 0,
                   "pixel_perfect": false}]}}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let a1111 = decoded(body["images"][0].as_str().unwrap()).to_rgb8();
    assert!(
        a1111 == support::pixels(&steered.path),
        "A1111's ControlNet unit renders as the job API does"
    );

    // What cannot be done is named.
    let mut sdxs = with_control(square_b64(64, 64));
    sdxs["model"] = json!("tiny");
    let mut unknown = with_control(square_b64(64, 64));
    unknown["control"]["model"] = json!("depth-xl");
    let mut hires = with_control(square_b64(64, 64));
    hires["hires"] = json!({"scale": 2});
    for (body, field, says) in [
        (sdxs, "control.model", "SD 1.x"),
        (unknown, "control.model", "test-control"),
        (hires, "control", "hires"),
    ] {
        let (status, answer) = post(&client, format!("{base}/api/v1/jobs"), body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        assert_eq!(answer["error"]["param"], field, "{answer}");
        assert!(
            answer["error"]["message"].as_str().unwrap().contains(says),
            "{answer}"
        );
    }
    let (status, answer) = post(
        &client,
        format!("{base}/sdapi/v1/txt2img"),
        json!({"prompt": "x", "width": 64, "height": 64, "steps": 1,
               "alwayson_scripts": {"controlnet": {"args": [{"module": "canny", "model": "test-control",
                   "image": square_b64(64, 64), "guidance_start": 0.5}]}}}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    assert!(
        answer["detail"]
            .as_str()
            .unwrap()
            .starts_with("alwayson_scripts.controlnet.args[0].guidance_start"),
        "{answer}"
    );
    server.shutdown().await.unwrap();
}

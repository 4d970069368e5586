//! The desktop app's core (`diffugen-app`), the layer every Tauri command calls: what the window gets when it
//! generates, follows progress, searches the gallery, remixes, reorders the queue and changes settings — with real
//! sd.cpp generations on the test model, and no webkit.

mod support;

use std::sync::Arc;
use std::time::Duration;

use diffugen_app::{Core, CoreOptions, GenerateForm};
use diffugen_engine::{JobEvent, Stage};
use diffugen_gallery::Query;
use support::Workspace;

/// The core over the workspace, without the network doors (or with them, when `settings` enables them).
async fn core(ws: &Workspace, settings: serde_json::Value) -> Core {
    let mut base = serde_json::json!({
        "vram_policy": "never",
        "api_enabled": false,
        "ollama_url": "http://127.0.0.1:9",
        "threads": 2,
    });
    for (k, v) in settings.as_object().unwrap() {
        base[k] = v.clone();
    }
    std::fs::write(ws.path("settings.json"), base.to_string()).unwrap();
    Core::start(CoreOptions {
        config: support::config(ws),
        worker: diffugen_engine::WorkerCommand {
            program: support::diffugen_bin(),
            args: vec![diffugen_engine::WORKER_SUBCOMMAND.into()],
        },
        gpu: Arc::new(diffugen_vram::Nvml::new()),
    })
    .await
    .expect("the core starts")
}

/// The core with its local API on `port` (no gateway).
async fn core_with_api(ws: &Workspace, port: u16) -> Core {
    core(
        ws,
        serde_json::json!({ "api_enabled": true, "api_port": port, "gateway_enabled": false }),
    )
    .await
}

/// A loopback port nothing listens on (the listener that found it is closed at once).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn form(prompt: &str) -> GenerateForm {
    GenerateForm {
        model: "tiny".into(),
        prompt: prompt.into(),
        width: Some(64),
        height: Some(64),
        steps: Some(2),
        seed: Some(7.0),
        count: Some(1),
        ..GenerateForm::default()
    }
}

/// The events of job `id` from `live` until its final one.
/// The gallery id of a finished job's first image (its events as `follow` collected them).
fn rendered(events: Vec<JobEvent>) -> u32 {
    match events.last().map(|e| e.stage.clone()) {
        Some(Stage::Done { outputs }) => outputs[0].gallery_id.unwrap(),
        other => panic!("the job did not finish: {other:?}"),
    }
}

async fn follow(live: &mut tokio::sync::broadcast::Receiver<JobEvent>, id: &str) -> Vec<JobEvent> {
    let mut events = Vec::new();
    tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            match live.recv().await {
                Ok(event) if event.job_id == id => {
                    let last = event.stage.is_final();
                    events.push(event);
                    if last {
                        break;
                    }
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("the event stream ended: {e}"),
            }
        }
    })
    .await
    .expect("the job ends within 120 s");
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_made_in_the_app_streams_every_step_and_preview_then_is_found_by_search_and_remixed(
) {
    let _gpu = support::ONE_AT_A_TIME.lock().await;
    let ws = Workspace::new();
    let core = core(&ws, serde_json::json!({})).await;
    let models = core.models().await;
    assert!(models
        .cards
        .iter()
        .any(|c| c.id == "tiny" && c.error.is_none()));
    assert!(models.samplers.iter().any(|s| s == "euler_a"));

    let mut live = core.job_events();
    let id = core
        .generate(form("a lighthouse on a cliff"))
        .await
        .unwrap();
    assert_eq!(core.job(&id).unwrap().source, "app");
    let events = follow(&mut live, &id).await;

    let steps: Vec<(u32, u32)> = events
        .iter()
        .filter_map(|e| match e.stage {
            Stage::Sampling { step, steps, .. } => Some((step, steps)),
            _ => None,
        })
        .collect();
    assert!(
        steps.contains(&(1, 2)) && steps.contains(&(2, 2)),
        "every step reaches the window: {steps:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e.stage, Stage::Preview { .. })),
        "the window gets live previews"
    );
    let Some(Stage::Done { outputs }) = events.last().map(|e| e.stage.clone()) else {
        panic!("the job did not finish: {:?}", events.last());
    };
    let gallery_id = outputs[0]
        .gallery_id
        .expect("the image is in the gallery when done arrives");

    let found = core
        .gallery_page(Query {
            text: Some("lighthouse".into()),
            ..Query::default()
        })
        .await
        .unwrap();
    assert_eq!(
        found.entries.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![gallery_id]
    );
    let count = core
        .gallery_count(Query {
            text: Some("lighthouse".into()),
            ..Query::default()
        })
        .await
        .unwrap();
    assert_eq!(count, 1);

    let remixed = core.gallery_remix(gallery_id).unwrap();
    assert_eq!(remixed.prompt, "a lighthouse on a cliff");
    assert_eq!(
        (remixed.width, remixed.height, remixed.steps),
        (Some(64), Some(64), Some(2))
    );
    assert_eq!(remixed.seed, Some(7.0));
    assert_eq!(remixed.model, "tiny");

    let (thumb, mime) = core.gallery_file(&format!("thumb-{gallery_id}")).unwrap();
    assert_eq!((&thumb[..2], mime), (&[0xFF, 0xD8][..], "image/jpeg"));
    let (image, mime) = core.gallery_file(&format!("image-{gallery_id}")).unwrap();
    assert_eq!((&image[1..4], mime), (&b"PNG"[..], "image/png"));
    assert!(
        core.gallery_file("../../etc/passwd").is_err(),
        "only gallery ids are served"
    );

    core.gallery_delete(gallery_id).unwrap();
    assert_eq!(core.gallery_count(Query::default()).await.unwrap(), 0);
    core.gallery_restore(gallery_id).unwrap();
    assert_eq!(core.gallery_count(Query::default()).await.unwrap(), 1);

    // The multi-select's bulk actions: one call for all, and a missing image named after the ones done.
    let favored = core.gallery_favorite_many(&[gallery_id], true).unwrap();
    assert!(favored[0].favorite);
    assert_eq!(core.gallery_delete_many(&[gallery_id]).unwrap().len(), 1);
    assert_eq!(core.gallery_count(Query::default()).await.unwrap(), 0);
    core.gallery_restore_many(&[gallery_id]).unwrap();
    let error = core
        .gallery_favorite_many(&[gallery_id, 424242], false)
        .unwrap_err();
    assert!(
        error.message.contains("1 of 2") && error.message.contains("424242"),
        "{error:?}"
    );
    assert_eq!(
        core.gallery_ids_between(&Query::default(), gallery_id, gallery_id)
            .unwrap(),
        [gallery_id]
    );
    // Export copies the files into a folder, never over one already there.
    let folder = ws.path("export");
    std::fs::create_dir_all(&folder).unwrap();
    let folder_text = folder.display().to_string();
    let first = core
        .gallery_export_many(&[gallery_id], &folder_text)
        .unwrap();
    let second = core
        .gallery_export_many(&[gallery_id], &folder_text)
        .unwrap();
    assert_ne!(first, second);
    assert!(second[0].ends_with(" (2).png"), "{second:?}");
    for path in first.iter().chain(&second) {
        assert_eq!(
            std::fs::read(path).unwrap(),
            std::fs::read(core.gallery_entry(gallery_id).unwrap().path).unwrap()
        );
    }
    let not_a_folder = core
        .gallery_export_many(&[gallery_id], &first[0])
        .unwrap_err();
    assert!(
        not_a_folder.message.contains("is not a folder"),
        "{not_a_folder:?}"
    );
    core.stop().await.unwrap();
}

/// A 32×32 PNG with a bright square in the middle, base64.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remix_of_a_hires_render_loads_the_first_pass_and_the_esrgan_pass_and_renders_the_same_image(
) {
    let _gpu = support::ONE_AT_A_TIME.lock().await;
    let ws = Workspace::new().with_upscalers();
    let core = core(&ws, serde_json::json!({})).await;
    assert!(core.upscalers().contains(&"tiny-esrgan-x2".to_string()));
    let mut live = core.job_events();
    let id = core
        .generate(GenerateForm {
            hires_scale: Some(2.0),
            hires_upscaler: Some(diffugen_engine::hires::HiresUpscaler::Model),
            hires_model: Some("tiny-esrgan-x2".into()),
            hires_steps: Some(1),
            hires_denoise: Some(0.5),
            ..form("a harbour at night")
        })
        .await
        .unwrap();
    let first = rendered(follow(&mut live, &id).await);
    let entry = core.gallery_entry(first).unwrap();
    assert_eq!((entry.width, entry.height), (128, 128));

    let remixed = core.gallery_remix(first).unwrap();
    assert_eq!((remixed.width, remixed.height), (Some(64), Some(64)));
    assert_eq!(remixed.hires_scale, Some(2.0));
    assert_eq!(
        remixed.hires_upscaler,
        Some(diffugen_engine::hires::HiresUpscaler::Model)
    );
    assert_eq!(remixed.hires_model.as_deref(), Some("tiny-esrgan-x2"));
    assert_eq!(
        (remixed.hires_steps, remixed.hires_denoise, remixed.seed),
        (Some(1), Some(0.5), Some(7.0))
    );
    let id = core.generate(remixed).await.unwrap();
    let again = rendered(follow(&mut live, &id).await);
    assert!(
        support::pixels(&core.gallery_entry(again).unwrap().path) == support::pixels(&entry.path),
        "the remix renders the same image"
    );
    core.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remix_of_an_inpainting_brings_back_its_init_image_mask_and_strength_and_renders_the_same_image(
) {
    let _gpu = support::ONE_AT_A_TIME.lock().await;
    let ws = Workspace::new();
    let core = core(&ws, serde_json::json!({})).await;
    let mut live = core.job_events();
    // A 32×32 picture and a mask over its middle, both stretched to the render's 64×64.
    let picture = format!("data:image/png;base64,{}", square_png());
    let id = core
        .generate(GenerateForm {
            init_image: Some(picture.clone()),
            mask: Some(picture),
            strength: Some(0.6),
            resize_mode: Some(diffugen_engine::params::ResizeMode::Stretch),
            ..form("a lantern in the fog")
        })
        .await
        .unwrap();
    let first = rendered(follow(&mut live, &id).await);
    let entry = core.gallery_entry(first).unwrap();

    let remixed = core.gallery_remix(first).unwrap();
    assert!(remixed.init_image.is_some(), "the init image comes back");
    assert!(remixed.mask.is_some(), "the mask comes back");
    assert_eq!((remixed.strength, remixed.seed), (Some(0.6), Some(7.0)));
    // What comes back is already at the render's size: nothing is resized again.
    assert_eq!(remixed.resize_mode, None);
    let id = core.generate(remixed).await.unwrap();
    let again = rendered(follow(&mut live, &id).await);
    assert!(
        support::pixels(&core.gallery_entry(again).unwrap().path) == support::pixels(&entry.path),
        "the remix renders the same image"
    );
    core.stop().await.unwrap();
}

fn square_png() -> String {
    use base64::Engine as _;
    let mut bytes = std::io::Cursor::new(Vec::new());
    image::RgbImage::from_fn(32, 32, |x, y| {
        image::Rgb(if (8..24).contains(&x) && (8..24).contains(&y) {
            [255; 3]
        } else {
            [0; 3]
        })
    })
    .write_to(&mut bytes, image::ImageFormat::Png)
    .unwrap();
    base64::engine::general_purpose::STANDARD.encode(bytes.into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_slots_live_preview_is_the_canny_map_of_the_picture_and_bad_thresholds_are_named(
) {
    use base64::Engine as _;
    let ws = Workspace::new();
    let core = core(&ws, serde_json::json!({})).await;
    let url = format!("data:image/png;base64,{}", square_png());
    let preview = core
        .control_preview(
            url.clone(),
            diffugen_engine::control::ControlModule::Canny,
            100.0,
            200.0,
        )
        .await
        .unwrap();
    let png = base64::engine::general_purpose::STANDARD
        .decode(preview.strip_prefix("data:image/png;base64,").unwrap())
        .unwrap();
    let map = image::load_from_memory(&png).unwrap().to_luma8();
    assert_eq!((map.width(), map.height()), (32, 32));
    assert!(map.pixels().any(|p| p.0[0] > 128) && map.get_pixel(16, 16).0[0] == 0);
    let error = core
        .control_preview(
            url,
            diffugen_engine::control::ControlModule::Canny,
            250.0,
            20.0,
        )
        .await
        .unwrap_err();
    assert_eq!(error.field.as_deref(), Some("control_low"), "{error:?}");
    assert!(core.controlnets().is_empty());
    core.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_form_is_refused_naming_the_field_and_what_is_allowed() {
    let ws = Workspace::new();
    let core = core(&ws, serde_json::json!({})).await;
    let cases = [
        (
            GenerateForm {
                seed: Some(1.5),
                ..form("x")
            },
            "seed",
            "whole number",
        ),
        (
            GenerateForm {
                model: "".into(),
                ..form("x")
            },
            "model",
            "choose a model",
        ),
        (
            GenerateForm {
                model: "nope".into(),
                ..form("x")
            },
            "model",
            "nope",
        ),
        (
            GenerateForm {
                steps: Some(0),
                ..form("x")
            },
            "steps",
            "",
        ),
        (
            GenerateForm {
                init_image: Some("C:/photo.png".into()),
                ..form("x")
            },
            "init_image",
            "data:image",
        ),
        (
            GenerateForm {
                control_model: Some("canny".into()),
                ..form("x")
            },
            "control_image",
            "control image",
        ),
        (
            GenerateForm {
                control_image: Some("data:image/png;base64,iVBORw0K".into()),
                ..form("x")
            },
            "control_model",
            "ControlNet model",
        ),
        (
            GenerateForm {
                control_model: Some("nope".into()),
                control_image: Some(format!("data:image/png;base64,{}", square_png())),
                ..form("x")
            },
            "control.model",
            "SD 1.x",
        ),
        (
            GenerateForm {
                init_image: Some("data:image/png;base64,iVBORw0K".into()),
                ..form("x")
            },
            "init_image",
            "",
        ),
    ];
    for (bad, field, words) in cases {
        let error = core.generate(bad).await.unwrap_err();
        assert_eq!(error.field.as_deref(), Some(field), "{error}");
        assert!(error.message.contains(words), "{field}: {}", error.message);
    }
    assert!(core.queue().is_empty(), "nothing was queued");
    core.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_jobs_can_be_reordered_and_the_running_one_cannot() {
    let _gpu = support::ONE_AT_A_TIME.lock().await;
    let ws = Workspace::new();
    let core = core(&ws, serde_json::json!({})).await;
    let a = core.generate(form("first")).await.unwrap();
    let b = core.generate(form("second")).await.unwrap();
    let c = core.generate(form("third")).await.unwrap();
    // Wait until the first job runs.
    tokio::time::timeout(Duration::from_secs(60), async {
        while core.job(&a).unwrap().state != diffugen_jobs::JobState::Running {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
    core.move_job(&c, 0).unwrap();
    let order: Vec<String> = core.queue().into_iter().map(|j| j.id).collect();
    assert_eq!(order, vec![a.clone(), c.clone(), b.clone()]);
    assert_eq!(core.job(&c).unwrap().position, Some(1));
    let error = core.move_job(&a, 1).unwrap_err();
    assert!(error.message.contains("only waiting jobs"), "{error}");
    assert_eq!(core.active_jobs(), 3);
    for id in [&a, &b, &c] {
        core.cancel_job(id).unwrap();
    }
    core.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_apply_to_the_library_at_once_and_network_ones_ask_for_a_restart() {
    let ws = Workspace::new();
    let extra = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(
        diffugen_testkit::test_model(),
        extra.path().join("borrowed.gguf"),
    )
    .unwrap();
    let port = free_port();
    let core = core_with_api(&ws, port).await;

    let error = core.check_setting("api_port", Some("lots")).unwrap_err();
    assert_eq!(error.field.as_deref(), Some("api_port"));
    let error = core
        .check_setting("vram_policy", Some("sometimes"))
        .unwrap_err();
    assert!(
        error.message.contains("always, auto, share, never"),
        "{error}"
    );

    // What the shell's settings store writes, then tells the core.
    let value = core
        .check_setting(
            "extra_models_dirs",
            Some(&extra.path().display().to_string()),
        )
        .unwrap()
        .unwrap();
    let mut file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ws.path("settings.json")).unwrap()).unwrap();
    file["extra_models_dirs"] = value;
    file["api_port"] = 6123.into();
    std::fs::write(ws.path("settings.json"), file.to_string()).unwrap();

    let change = core.settings_changed("extra_models_dirs").unwrap();
    assert!(!change.restart_needed);
    assert!(
        core.models().await.cards.iter().any(|c| c.id == "borrowed"),
        "the new folder is read at once"
    );
    let api: serde_json::Value = reqwest::get(format!("http://127.0.0.1:{port}/api/v1/models"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        api["cards"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["id"] == "borrowed"),
        "the API serves the new folder too (Open WebUI sees it without a restart)"
    );
    assert_eq!(
        core.info().extra_models_dirs,
        vec![extra.path().display().to_string()]
    );
    let change = core.settings_changed("api_port").unwrap();
    assert!(change.restart_needed);
    assert_eq!(change.settings.api_port, Some(6123));
    core.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_dropped_into_a_model_folder_tells_the_window_to_list_models_again() {
    let ws = Workspace::new();
    let core = core(&ws, serde_json::json!({})).await;
    let changes = core.model_events();
    // Follows from the moment it is called, so the change made after it is the one reported.
    let next = |changes: &tokio::sync::broadcast::Receiver<diffugen_app::ModelsChanged>| {
        let mut changes = changes.resubscribe();
        async move {
            tokio::time::timeout(Duration::from_secs(10), changes.recv())
                .await
                .expect("a change is reported")
                .unwrap()
        }
    };

    // Into DiffuGen's own folder.
    let waiting = next(&changes);
    let copied = ws.models_dir().join("copied-in.gguf");
    std::os::unix::fs::symlink(diffugen_testkit::test_model(), &copied).unwrap();
    let change = waiting.await;
    assert_eq!(change.paths, [copied.display().to_string()]);
    assert!(core
        .models()
        .await
        .cards
        .iter()
        .any(|c| c.id == "copied-in"));

    // Into a folder added in Settings a moment ago: it is watched from then on.
    let extra = tempfile::tempdir().unwrap();
    let mut file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ws.path("settings.json")).unwrap()).unwrap();
    file["extra_models_dirs"] = serde_json::json!([extra.path().display().to_string()]);
    std::fs::write(ws.path("settings.json"), file.to_string()).unwrap();
    core.settings_changed("extra_models_dirs").unwrap();
    let waiting = next(&changes);
    let borrowed = extra.path().join("borrowed.gguf");
    std::os::unix::fs::symlink(diffugen_testkit::test_model(), &borrowed).unwrap();
    assert_eq!(waiting.await.paths, [borrowed.display().to_string()]);
    assert!(core.models().await.cards.iter().any(|c| c.id == "borrowed"));
    core.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_api_port_still_opens_the_app_and_says_why() {
    let ws = Workspace::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let core = core_with_api(&ws, port).await;
    let info = core.info();
    assert_eq!(info.api_url, None);
    let error = info.api_error.expect("the reason is shown");
    assert!(
        error.contains(&port.to_string()) && error.contains("Settings"),
        "{error}"
    );
    core.stop().await.unwrap();

    let free = free_port();
    let core = core_with_api(&ws, free).await;
    assert_eq!(
        core.info().api_url,
        Some(format!("http://127.0.0.1:{free}"))
    );
    let health = reqwest::get(format!("http://127.0.0.1:{free}/health"))
        .await
        .unwrap();
    assert!(
        health.status().is_success(),
        "the app serves the API it announces"
    );
    core.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_from_the_cli_against_the_app_joins_the_app_queue_and_reports_its_progress_there() {
    let _gpu = support::ONE_AT_A_TIME.lock().await;
    let ws = Workspace::new();
    let port = free_port();
    let core = core_with_api(&ws, port).await;
    let mut live = core.job_events();
    let server = format!("http://127.0.0.1:{port}");
    let cli = {
        let data = ws.data_dir().to_path_buf();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(support::diffugen_bin())
                .args(["--data-dir"])
                .arg(&data)
                .args([
                    "generate",
                    "--json",
                    "--server",
                    &server,
                    "-m",
                    "tiny",
                    "-p",
                    "a harbor from the cli",
                ])
                .args(["-W", "64", "-H", "64", "--steps", "2", "--seed", "5"])
                .output()
                .unwrap()
        })
    };
    // The app sees the job arrive, from the CLI, and follows it to the end.
    let first = tokio::time::timeout(Duration::from_secs(60), live.recv())
        .await
        .expect("the app hears of the job")
        .unwrap();
    let info = core.job(&first.job_id).unwrap();
    assert_eq!(
        (info.source.as_str(), info.prompt.as_str()),
        ("cli", "a harbor from the cli")
    );
    let seen_by_app = follow(&mut live, &first.job_id).await;
    assert!(matches!(
        seen_by_app.last().unwrap().stage,
        Stage::Done { .. }
    ));
    // The CLI asked for no preview; the app's Queue shows one anyway.
    assert!(
        seen_by_app
            .iter()
            .any(|e| matches!(e.stage, Stage::Preview { .. })),
        "the window gets live previews of a job another client sent"
    );

    let output = cli.await.unwrap();
    assert!(output.status.success(), "{}", support::stderr(&output));
    let printed: Vec<JobEvent> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(printed.iter().all(|e| e.job_id == first.job_id));
    assert!(printed.iter().any(|e| matches!(
        e.stage,
        Stage::Sampling {
            step: 2,
            steps: 2,
            ..
        }
    )));
    let Some(Stage::Done { outputs }) = printed.last().map(|e| e.stage.clone()) else {
        panic!("the CLI did not print the end: {printed:?}");
    };
    assert_eq!(outputs[0].seed, 5);
    assert!(std::path::Path::new(&outputs[0].path).exists());
    core.stop().await.unwrap();
}

#[test]
fn the_cli_says_plainly_when_no_server_answers() {
    let ws = Workspace::new();
    let free = free_port();
    let output = ws.diffugen(&[
        "generate",
        "--server",
        &format!("http://127.0.0.1:{free}"),
        "-m",
        "tiny",
        "-p",
        "x",
    ]);
    assert!(!output.status.success());
    let error = support::stderr(&output);
    assert!(
        error.contains("no DiffuGen server answers") && error.contains("diffugen serve"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_cluster_in_its_settings_the_app_is_its_front_and_renders_through_it_as_the_worker_local(
) {
    let _gpu = support::ONE_AT_A_TIME.lock().await;
    let nats = diffugen_testkit::nats::NatsServer::start();
    let ws = Workspace::new();
    let core = core(&ws, serde_json::json!({ "cluster_url": nats.url })).await;
    let info = core.info();
    assert_eq!(info.cluster_url.as_deref(), Some(nats.url.as_str()));
    assert_eq!(info.cluster_error, None);
    let mut live = core.job_events();
    let id = core.generate(form("a harbour at dawn")).await.unwrap();
    let events = follow(&mut live, &id).await;
    assert!(
        events
            .iter()
            .any(|e| matches!(e.stage, Stage::Sampling { .. })),
        "the steps came back from the cluster: {events:?}"
    );
    let Some(Stage::Done { outputs }) = events.last().map(|e| &e.stage) else {
        panic!("{events:?}");
    };
    assert!(
        outputs[0].gallery_id.is_some(),
        "recorded in the app's gallery"
    );
    let job = core.jobs().get(&id).unwrap();
    assert_eq!(
        job.worker.as_deref(),
        Some("local"),
        "rendered here, as the cluster's worker `local`"
    );
    core.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_that_cannot_be_reached_leaves_the_app_rendering_here_and_says_why() {
    let _gpu = support::ONE_AT_A_TIME.lock().await;
    let ws = Workspace::new();
    let url = format!("nats://127.0.0.1:{}", free_port());
    let core = core(&ws, serde_json::json!({ "cluster_url": url })).await;
    let info = core.info();
    assert_eq!(info.cluster_url, None);
    let error = info.cluster_error.unwrap();
    assert!(
        error.contains("cannot connect to the NATS server"),
        "{error}"
    );
    assert!(error.contains("Rendering on this computer only"), "{error}");
    let mut live = core.job_events();
    let id = core.generate(form("a harbour at dusk")).await.unwrap();
    let events = follow(&mut live, &id).await;
    assert!(
        matches!(events.last().map(|e| &e.stage), Some(Stage::Done { .. })),
        "{events:?}"
    );
    core.stop().await.unwrap();

    let bad = core_settings_check(&ws, "cluster_url", "http://nas.local:4222").await;
    assert!(bad.contains("must start with nats:// or tls://"), "{bad}");
}

/// What the app says when `key` is set to `value` in Settings.
async fn core_settings_check(ws: &Workspace, key: &str, value: &str) -> String {
    let core = core(ws, serde_json::json!({})).await;
    let error = core.check_setting(key, Some(value)).unwrap_err();
    core.stop().await.unwrap();
    assert_eq!(error.field.as_deref(), Some(key));
    error.message
}

/// Waits until download `id` is listed as cancelled, failing at `deadline`.
async fn until_cancelled(core: &diffugen_app::Core, id: &str, deadline: std::time::Instant) {
    while !core
        .downloads()
        .iter()
        .any(|d| d.id == id && d.state == diffugen_downloads::PullState::Cancelled)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "{id} never cancelled: {:?}",
            core.downloads()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The window's plain (non-async) commands run on its main thread, outside the tokio runtime: a download, a
/// conversion or a pause started from there must start, not panic (a panic there aborts the whole app).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_that_start_work_can_be_called_from_the_windows_thread_outside_the_runtime() {
    let _gpu = support::ONE_AT_A_TIME.lock().await;
    let ws = Workspace::new();
    let core = Arc::new(core(&ws, serde_json::json!({})).await);
    let mut conversions = core.convert_events();
    let window = core.clone();
    let (download, conversion, paused) = std::thread::spawn(move || {
        assert!(tokio::runtime::Handle::try_current().is_err());
        let download = window.download("sd-turbo", None);
        let conversion = window.convert_model("tiny", None, diffugen_models::QuantType::Q8_0, None);
        let paused = window.set_queue_paused(true) && !window.set_queue_paused(false);
        (download, conversion, paused)
    })
    .join()
    .expect("no command panics outside the runtime");
    let download = download.expect("the download starts");
    assert!(core.downloads().iter().any(|d| d.id == download));
    let conversion = conversion.expect("the conversion starts");
    assert!(paused, "the queue paused and resumed");
    // The conversion runs to its end in the runtime (no network is needed for it).
    let ended = tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            let update = conversions.recv().await.unwrap();
            if update.id == conversion && update.event.is_final() {
                return update.event;
            }
        }
    })
    .await
    .expect("the conversion ends");
    assert!(
        matches!(ended, diffugen_engine::convert::ConvertEvent::Done { .. }),
        "{ended:?}"
    );
    // Cancelled, the download can be tried again from the window's thread, and then removed from the list.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    core.cancel_download(&download).unwrap();
    until_cancelled(&core, &download, deadline).await;
    let window = core.clone();
    let again = std::thread::spawn(move || window.retry_download(&download))
        .join()
        .expect("trying again does not panic outside the runtime")
        .expect("a cancelled download can be tried again");
    let ids: Vec<String> = core.downloads().into_iter().map(|d| d.id).collect();
    assert_eq!(ids, std::slice::from_ref(&again));
    core.cancel_download(&again).unwrap();
    until_cancelled(&core, &again, deadline).await;
    core.dismiss_download(&again).unwrap();
    assert!(core.downloads().is_empty());
    assert!(core.dismiss_download(&again).is_err());
}

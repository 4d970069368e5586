//! The gallery: every image DiffuGen makes is recorded and findable by its prompt; folders of A1111 and ComfyUI
//! images are imported with their parameters; a deleted database loses nothing a reindex cannot bring back.

mod support;

use std::path::{Path, PathBuf};

use diffugen_engine::output::{encode_png, Record, RecordLora};
use diffugen_gallery::{Gallery, Order, Query};
use serde_json::Value;
use support::{stderr, Workspace};

/// A PNG with DiffuGen's own record, as the engine writes it.
fn our_png(dir: &Path, name: &str, prompt: &str, model: &str, seed: i64, created: f64) -> PathBuf {
    our_png_with(dir, name, prompt, model, seed, created, |_| {})
}

/// [`our_png`] with the record changed by `edit` first.
fn our_png_with(
    dir: &Path,
    name: &str,
    prompt: &str,
    model: &str,
    seed: i64,
    created: f64,
    edit: impl FnOnce(&mut Record),
) -> PathBuf {
    let mut record = Record {
        app: "DiffuGen test".into(),
        job_id: format!("job-{seed}"),
        created,
        prompt: prompt.into(),
        negative_prompt: "blurry".into(),
        model: model.into(),
        family: if model.starts_with("sdxl") {
            diffugen_models::Family::Sdxl
        } else {
            diffugen_models::Family::Sd1
        },
        width: 64,
        height: 64,
        steps: 4,
        cfg_scale: 7.0,
        sampler: "euler_a".into(),
        scheduler: Some("karras".into()),
        seed,
        batch_index: 0,
        clip_skip: -1,
        loras: vec![RecordLora {
            name: "detail".into(),
            weight: 0.5,
        }],
        init_image: None,
        mask: None,
        strength: None,
        generation_seconds: 1.5,
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
    };
    edit(&mut record);
    let image = diffugen_sd::RgbImage {
        width: 64,
        height: 64,
        channels: 3,
        data: vec![(seed % 251) as u8; 64 * 64 * 3],
    };
    let path = dir.join(name);
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(&path, encode_png(&image, Some(&record)).unwrap()).unwrap();
    path
}

/// A PNG with one text chunk, as other tools write them.
fn foreign_png(path: &Path, key: &str, text: &str, width: u32, height: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let file = std::fs::File::create(path).unwrap();
    let mut encoder = png::Encoder::new(file, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.add_text_chunk(key.into(), text.into()).unwrap();
    let mut writer = encoder.write_header().unwrap();
    writer
        .write_image_data(&vec![90u8; (width * height * 3) as usize])
        .unwrap();
}

const A1111: &str = "a castle on a hill at sunrise, <lora:detail:0.6>\nNegative prompt: blurry, lowres\n\
Steps: 28, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 1234567890, Size: 96x64, \
Model hash: abc123, Model: juggernautXL_v9, Version: v1.9.4";

const COMFY: &str = r#"{
  "3": {"class_type": "KSampler", "inputs": {"seed": 42, "steps": 20, "cfg": 8.0, "sampler_name": "euler",
        "scheduler": "normal", "denoise": 1.0, "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0],
        "latent_image": ["5", 0]}},
  "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "v1-5-pruned-emaonly.safetensors"}},
  "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 96, "batch_size": 1}},
  "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red fox in the snow", "clip": ["4", 1]}},
  "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "watermark", "clip": ["4", 1]}}
}"#;

fn search(gallery: &Gallery, text: &str) -> Vec<String> {
    gallery
        .list(&Query {
            text: Some(text.into()),
            ..Query::default()
        })
        .unwrap()
        .entries
        .into_iter()
        .map(|e| e.prompt)
        .collect()
}

#[test]
fn every_generated_image_is_recorded_and_found_by_the_words_of_its_prompt() {
    let ws = Workspace::new();
    let (events, output) = ws.generate_json(&["--prompt", "a lighthouse at dusk", "--seed", "77"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let written = support::outputs(&events);
    let id = written[0]
        .gallery_id
        .expect("the done event names the gallery entry");

    let found = ws.diffugen(&["gallery", "search", "lighthouse", "--json"]);
    assert!(found.status.success(), "{}", stderr(&found));
    let page: Value = serde_json::from_slice(&found.stdout).unwrap();
    let entry = &page["entries"][0];
    assert_eq!(page["entries"].as_array().unwrap().len(), 1);
    assert_eq!(entry["id"], id);
    assert_eq!(entry["path"], written[0].path.as_str());
    assert_eq!(entry["prompt"], "a lighthouse at dusk");
    assert_eq!(entry["seed"], 77);
    assert_eq!(entry["model"], "tiny");
    assert_eq!(
        (entry["width"].clone(), entry["height"].clone()),
        (64.into(), 64.into())
    );
    assert!(entry["created"].as_f64().unwrap() > 1.7e9);
    assert!(entry["generation_seconds"].as_f64().unwrap() > 0.0);
    assert!(
        ws.path(&format!("thumbnails/{id}.jpg")).exists(),
        "a thumbnail was made"
    );

    // Prefixes match; unrelated words do not.
    let prefix: Value = serde_json::from_slice(
        &ws.diffugen(&["gallery", "search", "light", "--json"])
            .stdout,
    )
    .unwrap();
    assert_eq!(prefix["entries"].as_array().unwrap().len(), 1);
    let none: Value = serde_json::from_slice(
        &ws.diffugen(&["gallery", "search", "volcano", "--json"])
            .stdout,
    )
    .unwrap();
    assert!(none["entries"].as_array().unwrap().is_empty());

    let shown = ws.diffugen(&["gallery", "show", &id.to_string()]);
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(
        text.contains("a lighthouse at dusk") && text.contains("77"),
        "{text}"
    );
    let remix: Value =
        serde_json::from_slice(&ws.diffugen(&["gallery", "remix", &id.to_string()]).stdout)
            .unwrap();
    assert_eq!(remix["prompt"], "a lighthouse at dusk");
    assert_eq!(remix["seed"], 77);
    assert_eq!(remix["model"], "tiny");
    assert_eq!(remix["steps"], 2);
}

#[test]
fn a_remix_is_a_job_request_the_api_accepts_even_for_an_img2img_image() {
    let dir = tempfile::tempdir().unwrap();
    let gallery = Gallery::open(dir.path()).unwrap();
    let path = our_png_with(
        &dir.path().join("outputs"),
        "img2img.png",
        "a harbor repainted",
        "sd15",
        9,
        1e9,
        |record| {
            record.init_image = Some("holiday.jpg".into());
            record.strength = Some(0.6);
        },
    );
    let id = gallery.add(&path).unwrap();
    assert_eq!(
        gallery.get(id).unwrap().init_image.as_deref(),
        Some("holiday.jpg"),
        "the source is shown with the image"
    );
    let remix = gallery.remix(id).unwrap();
    // Only the init image's name is recorded (no copy DiffuGen kept), so this remix is text-to-image.
    let request: diffugen_engine::GenerateRequest =
        serde_json::from_value(remix.clone()).expect("POST /api/v1/jobs takes the remix as it is");
    assert_eq!(request.prompt, "a harbor repainted");
    assert_eq!(request.seed, Some(9));
    assert_eq!(
        (request.init_image, request.strength),
        (None, None),
        "{remix}"
    );
}

#[test]
fn every_filter_narrows_the_list() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("outputs");
    let gallery = Gallery::open(dir.path()).unwrap();
    let day = 86_400.0;
    let base = 1_767_225_600.0; // 2026-01-01
    let a = gallery
        .add(&our_png(&out, "a.png", "a red fox", "sd15", 1, base))
        .unwrap();
    let b = gallery
        .add(&our_png(
            &out,
            "b.png",
            "a blue fox",
            "sdxl-base",
            2,
            base + day,
        ))
        .unwrap();
    let c = gallery
        .add(&our_png(
            &out,
            "c.png",
            "a green owl",
            "sd15",
            3,
            base + 2.0 * day,
        ))
        .unwrap();
    foreign_png(&out.join("d.png"), "parameters", A1111, 96, 64);
    let d = gallery.add(&out.join("d.png")).unwrap();
    gallery.set_favorite(b, true).unwrap();
    gallery.add_to_board(c, "owls").unwrap();

    let ids = |query: Query| -> Vec<u32> {
        gallery
            .list(&query)
            .unwrap()
            .entries
            .iter()
            .map(|e| e.id)
            .collect()
    };
    assert_eq!(
        ids(Query::default()),
        [d, c, b, a],
        "the A1111 file is newest (its file time)"
    );
    assert_eq!(
        ids(Query {
            text: Some("fox".into()),
            ..Query::default()
        }),
        [b, a]
    );
    assert_eq!(
        ids(Query {
            model: Some("sd15".into()),
            ..Query::default()
        }),
        [c, a]
    );
    assert_eq!(
        ids(Query {
            family: Some("sdxl".into()),
            ..Query::default()
        }),
        [b]
    );
    assert_eq!(
        ids(Query {
            favorite: Some(true),
            ..Query::default()
        }),
        [b]
    );
    assert_eq!(
        ids(Query {
            board: Some("owls".into()),
            ..Query::default()
        }),
        [c]
    );
    assert_eq!(
        ids(Query {
            from: Some(base + day),
            to: Some(base + 2.0 * day),
            ..Query::default()
        }),
        [c, b]
    );
    assert_eq!(
        ids(Query {
            width: Some(96),
            height: Some(64),
            ..Query::default()
        }),
        [d]
    );
    assert_eq!(
        ids(Query {
            order: Order::Oldest,
            to: Some(base + 2.0 * day),
            ..Query::default()
        }),
        [a, b, c]
    );
    assert_eq!(gallery.get(c).unwrap().boards, ["owls"]);
}

#[test]
fn pages_stay_stable_while_new_images_arrive() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("outputs");
    let gallery = Gallery::open(dir.path()).unwrap();
    let mut expected = Vec::new();
    for i in 0..7 {
        let path = our_png(
            &out,
            &format!("{i}.png"),
            &format!("image {i}"),
            "sd15",
            i,
            1000.0 + i as f64,
        );
        expected.push(gallery.add(&path).unwrap());
    }
    expected.reverse(); // newest first
    let page = |cursor: Option<String>| {
        gallery
            .list(&Query {
                limit: Some(3),
                cursor,
                ..Query::default()
            })
            .unwrap()
    };
    let first = page(None);
    // New images arrive between pages (newer than everything listed).
    for i in 7..10 {
        let path = our_png(
            &out,
            &format!("{i}.png"),
            &format!("image {i}"),
            "sd15",
            i,
            5000.0 + i as f64,
        );
        gallery.add(&path).unwrap();
    }
    let second = page(first.next_cursor.clone());
    let third = page(second.next_cursor.clone());
    assert!(third.next_cursor.is_none(), "the last page says so");
    let seen: Vec<u32> = [first, second, third]
        .into_iter()
        .flat_map(|p| p.entries)
        .map(|e| e.id)
        .collect();
    assert_eq!(seen, expected, "no entry skipped or repeated");

    let bad = gallery.list(&Query {
        cursor: Some("nonsense".into()),
        ..Query::default()
    });
    assert!(bad.unwrap_err().to_string().contains("cursor"));
    let bad = gallery.list(&Query {
        limit: Some(0),
        ..Query::default()
    });
    assert!(bad.unwrap_err().to_string().contains("limit"));
}

#[test]
fn a_folder_of_our_a1111_and_comfyui_images_is_imported_with_its_parameters() {
    let ws = Workspace::new();
    let folder = ws.path("other-tools");
    our_png(
        &folder.join("ours"),
        "ours.png",
        "a quiet harbour",
        "sd15",
        5,
        1.8e9,
    );
    foreign_png(
        &folder.join("a1111/00001-1234567890.png"),
        "parameters",
        A1111,
        96,
        64,
    );
    foreign_png(
        &folder.join("comfy/ComfyUI_00001_.png"),
        "prompt",
        COMFY,
        64,
        96,
    );
    foreign_png(
        &folder.join("plain.png"),
        "Comment",
        "nothing useful",
        32,
        32,
    );
    std::fs::write(folder.join("broken.png"), b"\x89PNG not really").unwrap();

    let output = ws.diffugen(&[
        "gallery",
        "reindex",
        "--dir",
        folder.to_str().unwrap(),
        "--json",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["scanned"], 5);
    assert_eq!(report["added"], 4);
    assert_eq!(report["unreadable"].as_array().unwrap().len(), 1);

    let gallery = Gallery::open(ws.data_dir()).unwrap();
    let find = |word: &str| {
        let page = gallery
            .list(&Query {
                text: Some(word.into()),
                ..Query::default()
            })
            .unwrap();
        assert_eq!(page.entries.len(), 1, "{word}");
        page.entries.into_iter().next().unwrap()
    };
    let a1111 = find("castle");
    assert_eq!(a1111.source, "a1111");
    assert_eq!(a1111.negative_prompt, "blurry, lowres");
    assert_eq!(
        (a1111.steps, a1111.cfg_scale, a1111.seed),
        (Some(28), Some(6.5), Some(1234567890))
    );
    assert_eq!(a1111.sampler.as_deref(), Some("DPM++ 2M"));
    assert_eq!(a1111.model.as_deref(), Some("juggernautXL_v9"));
    assert_eq!((a1111.width, a1111.height), (96, 64));
    assert_eq!(a1111.loras[0].name, "detail");

    let comfy = find("fox");
    assert_eq!(comfy.source, "comfyui");
    assert_eq!(comfy.negative_prompt, "watermark");
    assert_eq!(
        (comfy.steps, comfy.seed, comfy.cfg_scale),
        (Some(20), Some(42), Some(8.0))
    );
    assert_eq!(
        comfy.model.as_deref(),
        Some("v1-5-pruned-emaonly.safetensors")
    );

    let ours = find("harbour");
    assert_eq!(ours.source, "diffugen");
    assert_eq!(ours.loras[0].weight, 0.5);
    assert_eq!(ours.scheduler.as_deref(), Some("karras"));

    // Reindexing again adds nothing twice.
    let again: Value = serde_json::from_slice(
        &ws.diffugen(&[
            "gallery",
            "reindex",
            "--dir",
            folder.to_str().unwrap(),
            "--json",
        ])
        .stdout,
    )
    .unwrap();
    assert_eq!(again["added"], 0);
}

#[test]
fn a_deleted_database_is_rebuilt_from_the_files_and_rows_without_files_are_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("outputs");
    {
        let gallery = Gallery::open(dir.path()).unwrap();
        for i in 0..4 {
            let path = our_png(
                &out,
                &format!("{i}.png"),
                &format!("tower number{i}"),
                "sd15",
                100 + i,
                1e9 + i as f64,
            );
            gallery.add(&path).unwrap();
        }
        assert_eq!(gallery.count().unwrap(), 4);
    }
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(dir.path().join(format!("gallery.sqlite{suffix}")));
    }
    // A crash mid-write leaves at most a hidden temporary file, which is not an image.
    std::fs::write(out.join(".5.png.tmp-123"), b"half").unwrap();

    let gallery = Gallery::open(dir.path()).unwrap();
    assert_eq!(gallery.count().unwrap(), 0);
    let report = gallery.reindex(None).unwrap();
    assert_eq!((report.added, report.removed), (4, 0));
    assert_eq!(search(&gallery, "number2"), ["tower number2"]);
    let entry = &gallery
        .list(&Query {
            text: Some("number3".into()),
            ..Query::default()
        })
        .unwrap()
        .entries[0];
    assert_eq!((entry.seed, entry.created), (Some(103), 1e9 + 3.0));

    // The other direction: a file removed behind the gallery's back.
    std::fs::remove_file(out.join("1.png")).unwrap();
    let report = gallery.reindex(None).unwrap();
    assert_eq!((report.added, report.removed), (0, 1));
    assert!(search(&gallery, "number1").is_empty());
    assert_eq!(gallery.count().unwrap(), 3);
}

#[test]
fn delete_moves_to_the_trash_and_restore_brings_it_back() {
    let ws = Workspace::new();
    let path = our_png(
        &ws.path("outputs"),
        "keep.png",
        "a paper boat",
        "sd15",
        9,
        2e9,
    );
    let gallery = Gallery::open(ws.data_dir()).unwrap();
    let id = gallery.add(&path).unwrap().to_string();

    let output = ws.diffugen(&["gallery", "delete", &id]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(!path.exists(), "the file left the outputs folder");
    assert!(
        search(&gallery, "boat").is_empty(),
        "trashed images are not listed"
    );
    let trash = gallery
        .list(&Query {
            trashed: true,
            ..Query::default()
        })
        .unwrap();
    assert_eq!(trash.entries.len(), 1);
    // Reindex keeps trashed entries whose file waits in the trash.
    assert_eq!(gallery.reindex(None).unwrap().removed, 0);

    let output = ws.diffugen(&["gallery", "restore", &id]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(path.exists(), "the file is back where it was");
    assert_eq!(search(&gallery, "boat"), ["a paper boat"]);

    ws.diffugen(&["gallery", "delete", &id]);
    let output = ws.diffugen(&["gallery", "empty-trash"]);
    assert!(String::from_utf8_lossy(&output.stdout).contains("deleted 1"));
    assert_eq!(gallery.count().unwrap(), 0);
    let gone = ws.diffugen(&["gallery", "show", &id]);
    assert!(!gone.status.success());
    assert!(stderr(&gone).contains(&format!("no gallery entry with id {id}")));
}

#[test]
fn hostile_search_strings_are_searched_as_text_never_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let gallery = Gallery::open(dir.path()).unwrap();
    gallery
        .add(&our_png(
            &dir.path().join("outputs"),
            "q.png",
            "a \"quoted\" AND starry* night",
            "sd15",
            1,
            1.0,
        ))
        .unwrap();
    for hostile in [
        "\"",
        "\"\"",
        "*",
        "AND",
        "OR NOT",
        "NEAR(",
        "starry*",
        "-night",
        "^night",
        "col:umn",
        "'; DROP TABLE images; --",
        "(((",
        "🦊",
        "quoted\"",
        "   ",
        "night AND",
    ] {
        let result = gallery.list(&Query {
            text: Some(hostile.into()),
            ..Query::default()
        });
        assert!(result.is_ok(), "{hostile:?}: {result:?}");
    }
    assert_eq!(search(&gallery, "\"quoted").len(), 1);
    assert_eq!(search(&gallery, "starry*").len(), 1);
    assert_eq!(
        search(&gallery, "AND").len(),
        1,
        "AND is a word here, not an operator"
    );
    assert_eq!(gallery.count().unwrap(), 1, "the table is still there");
}

#[test]
fn readers_keep_working_while_a_write_is_in_progress() {
    let dir = tempfile::tempdir().unwrap();
    let gallery = Gallery::open(dir.path()).unwrap();
    gallery
        .add(&our_png(
            &dir.path().join("outputs"),
            "r.png",
            "a windmill",
            "sd15",
            1,
            1.0,
        ))
        .unwrap();
    // Another process holds a write transaction open.
    let writer = rusqlite::Connection::open(dir.path().join("gallery.sqlite")).unwrap();
    writer
        .execute_batch("BEGIN IMMEDIATE; UPDATE images SET favorite = 1;")
        .unwrap();
    let started = std::time::Instant::now();
    assert_eq!(search(&gallery, "windmill"), ["a windmill"]);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(1),
        "the read waited for the write"
    );
    assert!(
        !gallery.list(&Query::default()).unwrap().entries[0].favorite,
        "uncommitted data is not seen"
    );
    writer.execute_batch("COMMIT").unwrap();
    assert!(gallery.list(&Query::default()).unwrap().entries[0].favorite);
}

#[tokio::test]
async fn the_http_gallery_lists_searches_and_serves_images_and_thumbnails() {
    let ws = Workspace::new();
    let gallery = std::sync::Arc::new(Gallery::open(ws.data_dir()).unwrap());
    let id = gallery
        .add(&our_png(
            &ws.path("outputs"),
            "h.png",
            "a glass teapot",
            "sd15",
            3,
            1.9e9,
        ))
        .unwrap();
    foreign_png(&ws.path("elsewhere/x.png"), "parameters", A1111, 96, 64);
    gallery.add(&ws.path("elsewhere/x.png")).unwrap();
    let jobs = diffugen_jobs::JobManager::start(
        std::sync::Arc::new(support::engine()),
        diffugen_jobs::JobOptions {
            depth: 4,
            orchestrator: None,
            gallery: Some(gallery.clone()),
            defaults: Default::default(),
            store: None,
        },
    );
    let (server, base) = support::serve_api(&ws, jobs).await;
    let client = reqwest::Client::new();
    let get = |path: String| {
        let client = client.clone();
        async move { client.get(path).send().await.unwrap() }
    };

    let page: Value = get(format!("{base}/api/v1/gallery?query=teapot"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["entries"][0]["id"], id);
    assert_eq!(page["entries"][0]["seed"], 3);
    let all: Value = get(format!("{base}/api/v1/gallery?limit=1"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(all["entries"].as_array().unwrap().len(), 1);
    let next = all["next_cursor"].as_str().unwrap();
    let rest: Value = get(format!("{base}/api/v1/gallery?limit=1&cursor={next}"))
        .await
        .json()
        .await
        .unwrap();
    assert_ne!(rest["entries"][0]["id"], all["entries"][0]["id"]);

    let entry: Value = get(format!("{base}/api/v1/gallery/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(entry["prompt"], "a glass teapot");
    let image = get(format!("{base}/api/v1/gallery/{id}/image")).await;
    assert_eq!(image.headers()["content-type"], "image/png");
    let thumb = get(format!("{base}/api/v1/gallery/{id}/thumbnail")).await;
    assert_eq!(thumb.headers()["content-type"], "image/jpeg");
    let thumb = image::load_from_memory(&thumb.bytes().await.unwrap()).unwrap();
    assert!(thumb.width() <= 256 && thumb.height() <= 256);

    // Bad input: named fields, OpenAI's error shape.
    for (path, field) in [
        (format!("{base}/api/v1/gallery/abc"), "id"),
        (format!("{base}/api/v1/gallery?favorite=maybe"), "favorite"),
        (format!("{base}/api/v1/gallery?limit=9999"), "limit"),
        (format!("{base}/api/v1/gallery?cursor=zzz"), "cursor"),
        (format!("{base}/api/v1/gallery?order=sideways"), "order"),
    ] {
        let response = get(path.clone()).await;
        assert_eq!(response.status(), 400, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["param"], field, "{path}: {body}");
    }
    let hostile = get(format!("{base}/api/v1/gallery?query=%22%2A%28NEAR")).await;
    assert_eq!(hostile.status(), 200);
    assert_eq!(
        get(format!("{base}/api/v1/gallery/99999")).await.status(),
        404
    );

    // The original project's /images lists from the gallery.
    let listing: Value = get(format!("{base}/images")).await.json().await.unwrap();
    let urls: Vec<&str> = listing["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["url"].as_str().unwrap())
        .collect();
    assert!(
        urls.contains(&format!("{base}/images/h.png").as_str()),
        "{urls:?}"
    );
    assert!(urls.iter().any(|u| u.ends_with("/image")), "{urls:?}");

    let favorite: Value = client
        .post(format!("{base}/api/v1/gallery/{id}/favorite"))
        .json(&serde_json::json!({"favorite": true}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(favorite["favorite"], true);
    let deleted = client
        .delete(format!("{base}/api/v1/gallery/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
    let page: Value = get(format!("{base}/api/v1/gallery?query=teapot"))
        .await
        .json()
        .await
        .unwrap();
    assert!(page["entries"].as_array().unwrap().is_empty());
    server.shutdown().await.unwrap();
}

#[test]
fn tags_are_searched_like_prompt_words() {
    let ws = Workspace::new();
    let gallery = Gallery::open(ws.data_dir()).unwrap();
    let id = gallery
        .add(&our_png(
            &ws.path("outputs"),
            "t.png",
            "a bowl of fruit",
            "sd15",
            4,
            3.0,
        ))
        .unwrap();
    let output = ws.diffugen(&["gallery", "tag", &id.to_string(), "still life", "for-print"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(search(&gallery, "still"), ["a bowl of fruit"]);
    assert_eq!(gallery.get(id).unwrap().tags, ["still life", "for-print"]);
    let bad = ws.diffugen(&["gallery", "tag", &id.to_string(), "a,b"]);
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("invalid tags"));
}

#[test]
fn boards_are_created_renamed_and_deleted_and_their_images_stay_in_the_gallery() {
    let dir = tempfile::tempdir().unwrap();
    let gallery = Gallery::open(dir.path()).unwrap();
    let id = gallery
        .add(&our_png(
            &dir.path().join("outputs"),
            "b.png",
            "a boat",
            "sd15",
            1,
            1e9,
        ))
        .unwrap();
    gallery.create_board("Harbours").unwrap();
    assert!(
        gallery.create_board(" Harbours ").is_err(),
        "names are unique"
    );
    assert!(gallery.create_board("  ").is_err(), "a board needs a name");
    gallery.add_to_board(id, "Harbours").unwrap();
    gallery.rename_board("Harbours", "Ports").unwrap();
    assert_eq!(gallery.boards().unwrap(), [("Ports".to_string(), 1)]);
    assert_eq!(gallery.get(id).unwrap().boards, ["Ports"]);
    gallery.delete_board("Ports").unwrap();
    assert!(gallery.boards().unwrap().is_empty());
    assert!(
        gallery.get(id).unwrap().boards.is_empty(),
        "the image stays, off the board"
    );
    assert!(
        gallery.rename_board("Ports", "Docks").is_err(),
        "no such board any more"
    );
}

#[test]
fn a_shift_click_range_is_every_matching_image_between_the_two_in_the_grids_order_loaded_or_not() {
    let dir = tempfile::tempdir().unwrap();
    let gallery = Gallery::open(dir.path()).unwrap();
    // 300 images, every third a fox: far more than one page of the grid.
    let rows: Vec<(String, f64, String, String)> = (0..300)
        .map(|i| {
            let prompt = if i % 3 == 0 { "a fox" } else { "a tree" };
            (
                format!("/nowhere/{i}.png"),
                f64::from(i),
                prompt.to_string(),
                "m".into(),
            )
        })
        .collect();
    gallery.insert_synthetic(&rows).unwrap();
    let all = gallery
        .list(&Query {
            limit: Some(500),
            ..Query::default()
        })
        .unwrap()
        .entries;
    let (newest, oldest) = (all[0].id, all[299].id);

    let range = gallery
        .ids_between(&Query::default(), oldest, newest)
        .unwrap();
    assert_eq!(range.len(), 300, "either end first, every image between");
    assert_eq!(
        range.first(),
        Some(&newest),
        "newest first, as the grid shows them"
    );
    let foxes = Query {
        text: Some("fox".into()),
        ..Query::default()
    };
    let fox_ids: Vec<u32> = all
        .iter()
        .filter(|e| e.prompt == "a fox")
        .map(|e| e.id)
        .collect();
    let range = gallery
        .ids_between(&foxes, fox_ids[10], fox_ids[60])
        .unwrap();
    assert_eq!(
        range,
        fox_ids[10..=60].to_vec(),
        "only what the filter shows"
    );
    assert!(matches!(
        gallery.ids_between(&Query::default(), 999_999, newest),
        Err(diffugen_gallery::GalleryError::NotFound(999_999))
    ));
}

//! Identifying models from their headers alone, as sd.cpp would, and listing them with `diffugen models`.

mod support;

use std::io::Write;
use std::path::Path;

use diffugen_models::header::{self, HeaderError};
use diffugen_models::{identify, Library, Role};
use diffugen_testkit::gguf::{self, DType, TensorInfo};
use serde_json::json;
use support::Workspace;

/// Writes a GGUF with these tensors (PyTorch shapes, zero data).
fn gguf_file(path: &Path, tensors: &[(&str, &[u64])]) {
    let infos: Vec<TensorInfo> = tensors
        .iter()
        .map(|(name, shape)| TensorInfo {
            name: name.to_string(),
            ne: shape.iter().rev().copied().collect(),
            dtype: DType::F16,
        })
        .collect();
    let mut file = std::fs::File::create(path).unwrap();
    gguf::write(&mut file, &[], &infos, |i, w| {
        w.write_all(&vec![0u8; infos[i].data_bytes() as usize])
    })
    .unwrap();
}

fn family_of(tensors: &[(&str, &[u64])]) -> (String, Option<String>, Role) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    gguf_file(&path, tensors);
    let id = identify(&header::read(&path).unwrap().tensors);
    (id.family.to_string(), id.variant, id.role)
}

const TOKENS_768: (&str, &[u64]) = (
    "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight",
    &[4, 768],
);
const TOKENS_1024: (&str, &[u64]) = ("cond_stage_model.model.token_embedding.weight", &[4, 1024]);
const UNET_IN: (&str, &[u64]) = (
    "model.diffusion_model.input_blocks.0.0.weight",
    &[320, 4, 3, 3],
);
const MIDDLE: (&str, &[u64]) = ("model.diffusion_model.middle_block.1.proj_in.weight", &[4]);
const OUT_71: (&str, &[u64]) = (
    "model.diffusion_model.output_blocks.7.1.proj_in.weight",
    &[4],
);

#[test]
fn the_test_model_is_identified_as_an_sdxs_checkpoint_in_f16() {
    let ws = Workspace::new();
    let output = ws.diffugen(&["models", "--json"]);
    assert!(output.status.success());
    let listing: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let card = &listing["cards"][0];
    assert_eq!(
        (card["id"].clone(), card["source"].clone()),
        ("tiny".into(), "checkpoint".into())
    );
    assert!(card["estimated_bytes"].as_f64().unwrap() > card["size_bytes"].as_f64().unwrap());
    let tiny = &listing["files"][0];
    assert_eq!(tiny["id"], "tiny");
    assert_eq!(tiny["family"], "sdxs");
    assert_eq!(tiny["variant"], "512-ds");
    assert_eq!(tiny["role"], "checkpoint");
    assert_eq!(tiny["quantization"], "f16");
    assert_eq!(tiny["format"], "gguf");
    let params = tiny["parameters"].as_f64().unwrap();
    assert!((430e6..450e6).contains(&params), "{params}");
    assert!(tiny["size_bytes"].as_f64().unwrap() > 800e6);
}

#[test]
fn sd1_sd2_and_their_variants_are_told_apart_by_text_width_and_unet_blocks() {
    assert_eq!(
        family_of(&[TOKENS_768, UNET_IN, MIDDLE, OUT_71]),
        ("sd1".into(), None, Role::Checkpoint)
    );
    assert_eq!(
        family_of(&[
            TOKENS_768,
            (
                "model.diffusion_model.input_blocks.0.0.weight",
                &[320, 9, 3, 3]
            ),
            MIDDLE
        ])
        .1,
        Some("inpaint".into())
    );
    assert_eq!(
        family_of(&[TOKENS_768, UNET_IN, OUT_71]).1,
        Some("tiny_unet".into())
    );
    assert_eq!(family_of(&[TOKENS_1024, UNET_IN, MIDDLE]).0, "sd2");
}

#[test]
fn sdxl_is_recognised_by_its_second_text_encoder() {
    let second = (
        "conditioner.embedders.1.model.token_embedding.weight",
        &[4u64, 1280][..],
    );
    let first = (
        "conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight",
        &[4u64, 768][..],
    );
    assert_eq!(
        family_of(&[first, second, UNET_IN, MIDDLE]),
        ("sdxl".into(), None, Role::Checkpoint)
    );
}

#[test]
fn transformer_families_are_recognised_including_standalone_diffusion_models() {
    assert_eq!(
        family_of(&[(
            "model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight",
            &[4]
        )])
        .0,
        "sd3"
    );
    let flux = family_of(&[
        ("double_blocks.0.img_attn.qkv.weight", &[4]),
        ("img_in.weight", &[3072, 64]),
    ]);
    assert_eq!(flux, ("flux".into(), None, Role::DiffusionModel));
    assert_eq!(
        family_of(&[("double_blocks.0.x", &[4]), ("img_in.weight", &[3072, 384])]).1,
        Some("fill".into())
    );
    assert_eq!(
        family_of(&[
            ("double_blocks.0.x", &[4]),
            ("distilled_guidance_layer.in_proj.weight", &[4])
        ])
        .0,
        "chroma"
    );
    assert_eq!(
        family_of(&[(
            "model.diffusion_model.double_stream_modulation_img.lin.weight",
            &[4]
        )])
        .0,
        "flux2"
    );
    assert_eq!(
        family_of(&[("model.diffusion_model.cap_embedder.0.weight", &[4])]).0,
        "z_image"
    );
    assert_eq!(
        family_of(&[(
            "model.diffusion_model.transformer_blocks.0.img_mod.1.weight",
            &[4]
        )])
        .0,
        "qwen_image"
    );
}

#[test]
fn loras_vaes_and_text_encoders_get_their_roles() {
    assert_eq!(
        family_of(&[("lora_unet_down_blocks_0.lora_up.weight", &[4, 4])]).2,
        Role::Lora
    );
    assert_eq!(
        family_of(&[("first_stage_model.decoder.conv_in.weight", &[4])]).2,
        Role::Vae
    );
    let t5 = family_of(&[("encoder.block.0.layer.0.SelfAttention.q.weight", &[4, 4])]);
    assert_eq!((t5.0.as_str(), t5.2), ("t5xxl", Role::TextEncoder));
}

#[test]
fn safetensors_headers_are_read_without_the_weights() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    let json = br#"{"__metadata__":{"format":"pt"},"double_blocks.0.img_attn.qkv.weight":{"dtype":"BF16","shape":[2,2],"data_offsets":[0,8]}}"#;
    let mut file = std::fs::File::create(&path).unwrap();
    file.write_all(&(json.len() as u64).to_le_bytes()).unwrap();
    file.write_all(json).unwrap();
    file.write_all(&[0u8; 8]).unwrap();
    let header = header::read(&path).unwrap();
    assert_eq!(header.tensors[0].dtype, "bf16");
    assert_eq!(header.tensors[0].shape, [2, 2]);
    assert_eq!(identify(&header.tensors).family.as_str(), "flux");
}

#[test]
fn damaged_and_foreign_files_are_listed_as_unusable_never_a_crash() {
    let ws = Workspace::new();
    std::fs::write(
        ws.models_dir().join("notes.gguf"),
        b"this is not a model at all",
    )
    .unwrap();
    let mut header = gguf::header_bytes(
        &[],
        &[TensorInfo {
            name: "x".into(),
            ne: vec![1 << 20],
            dtype: DType::F32,
        }],
    );
    header.truncate(header.len() - 3);
    std::fs::write(ws.models_dir().join("cut.gguf"), &header).unwrap();
    assert!(matches!(
        header::read(&ws.models_dir().join("notes.gguf")),
        Err(HeaderError::UnknownFormat)
    ));

    let entries = Library::new(ws.models_dir()).scan();
    let notes = entries.iter().find(|e| e.id == "notes").unwrap();
    assert!(notes
        .error
        .as_deref()
        .unwrap()
        .contains("not a GGUF, safetensors or PyTorch checkpoint"));
    let cut = entries.iter().find(|e| e.id == "cut").unwrap();
    assert!(cut.error.is_some());
    let table = ws.diffugen(&["models"]);
    assert!(table.status.success());
    assert!(String::from_utf8_lossy(&table.stdout).contains("unusable"));
}

#[test]
fn a_preset_assembles_a_multi_file_model_with_its_family_defaults() {
    let ws = Workspace::new();
    let dir = ws.models_dir();
    gguf_file(
        &dir.join("flux1-schnell-q8.gguf"),
        &[("double_blocks.0.img_attn.qkv.weight", &[4])],
    );
    gguf_file(&dir.join("ae.gguf"), &[("decoder.conv_in.weight", &[4])]);
    gguf_file(
        &dir.join("clip_l.gguf"),
        &[("text_model.embeddings.token_embedding.weight", &[4, 768])],
    );
    gguf_file(
        &dir.join("t5xxl.gguf"),
        &[("encoder.block.0.layer.0.SelfAttention.q.weight", &[4, 4])],
    );
    std::fs::write(
        dir.join("flux-schnell.preset.json"),
        r#"{"diffusion_model":"flux1-schnell-q8.gguf","vae":"ae.gguf","clip_l":"clip_l.gguf","t5xxl":"t5xxl.gguf"}"#,
    )
    .unwrap();
    let model = Library::new(&dir).resolve("flux-schnell").unwrap();
    assert_eq!(model.family.as_str(), "flux");
    assert_eq!(
        model.components.diffusion_model.as_deref(),
        Some(dir.join("flux1-schnell-q8.gguf").as_path())
    );
    assert_eq!(
        model.components.t5xxl.as_deref(),
        Some(dir.join("t5xxl.gguf").as_path())
    );
    assert_eq!((model.defaults.steps, model.defaults.cfg_scale), (4, 1.0));

    let err = Library::new(&dir)
        .resolve("flux1-schnell-q8")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("needs its VAE and text encoders") && err.contains("preset"),
        "{err}"
    );
}

const FLUX_DIT: &[(&str, &[u64])] = &[
    ("double_blocks.0.img_attn.qkv.weight", &[4]),
    ("img_in.weight", &[3072, 64]),
];
const FLUX_VAE: &[(&str, &[u64])] = &[("decoder.conv_in.weight", &[512, 16, 3, 3])];
const CLIP_L: &[(&str, &[u64])] = &[("text_model.embeddings.token_embedding.weight", &[8, 768])];
const T5XXL: &[(&str, &[u64])] = &[("encoder.block.0.layer.0.SelfAttention.q.weight", &[4, 4])];

/// A FLUX set spread over a ComfyUI-style tree, as users keep it.
fn flux_tree(root: &Path) {
    for dir in ["diffusion_models", "vae", "text_encoders"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    gguf_file(
        &root.join("diffusion_models/flux1-schnell-q4_0.gguf"),
        FLUX_DIT,
    );
    gguf_file(&root.join("vae/ae.gguf"), FLUX_VAE);
    gguf_file(&root.join("text_encoders/clip_l.gguf"), CLIP_L);
    gguf_file(&root.join("text_encoders/t5xxl_fp16.gguf"), T5XXL);
}

#[test]
fn a_flux_set_in_the_folders_is_assembled_into_one_card_reachable_by_its_alias() {
    let dir = tempfile::tempdir().unwrap();
    flux_tree(dir.path());
    let library = Library::new(dir.path());
    let cards = library.cards();
    assert_eq!(cards.len(), 1, "{cards:#?}");
    let card = &cards[0];
    assert_eq!(card.id, "flux1-schnell-q4_0");
    assert_eq!(
        (card.family.as_str(), card.source.as_str()),
        ("flux", "assembled")
    );
    assert_eq!(card.error, None);
    let parts: Vec<&str> = card
        .components
        .iter()
        .map(|c| c.component.as_str())
        .collect();
    assert_eq!(parts, ["diffusion_model", "vae", "clip_l", "t5xxl"]);
    assert_eq!(card.aliases, ["flux-schnell"]);
    assert_eq!((card.default_steps, card.default_width), (4, 1024));
    assert!(
        card.estimated_bytes > card.size_bytes,
        "weights plus working memory"
    );

    for id in ["flux1-schnell-q4_0", "flux-schnell"] {
        let model = library.resolve(id).unwrap();
        assert_eq!(model.family.as_str(), "flux");
        assert!(model
            .components
            .vae
            .as_ref()
            .unwrap()
            .ends_with("vae/ae.gguf"));
        assert!(model
            .components
            .t5xxl
            .as_ref()
            .unwrap()
            .ends_with("t5xxl_fp16.gguf"));
        assert!(model.components.clip_l.is_some() && model.components.diffusion_model.is_some());
    }
    // Saved as a preset (`diffugen models save`), it becomes a card the user can edit.
    let output = std::process::Command::new(support::diffugen_bin())
        .args([
            "--models-dir",
            dir.path().to_str().unwrap(),
            "models",
            "save",
            "flux-schnell",
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", support::stderr(&output));
    let preset = String::from_utf8_lossy(&output.stdout).trim().to_string();
    assert!(
        preset.ends_with("flux1-schnell-q4_0.preset.json"),
        "{preset}"
    );
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&preset).unwrap()).unwrap();
    assert_eq!(saved["family"], "flux");
    assert_eq!(saved["defaults"]["steps"], 4);
    let cards = library.cards();
    assert_eq!(cards.len(), 1);
    assert_eq!(cards[0].source, "preset");
}

#[test]
fn an_ambiguous_or_incomplete_set_is_listed_with_what_is_missing_never_guessed() {
    let dir = tempfile::tempdir().unwrap();
    flux_tree(dir.path());
    gguf_file(&dir.path().join("text_encoders/t5xxl_fp8.gguf"), T5XXL);
    let library = Library::new(dir.path());
    let card = &library.cards()[0];
    let error = card.error.as_deref().unwrap();
    assert!(
        error.contains("2 t5xxl files fit")
            && error.contains("t5xxl_fp8")
            && error.contains("preset"),
        "{error}"
    );
    let resolved = library
        .resolve("flux1-schnell-q4_0")
        .unwrap_err()
        .to_string();
    assert!(resolved.contains("2 t5xxl files fit"), "{resolved}");

    std::fs::remove_file(dir.path().join("vae/ae.gguf")).unwrap();
    std::fs::remove_file(dir.path().join("text_encoders/t5xxl_fp8.gguf")).unwrap();
    let error = library.cards()[0].error.clone().unwrap();
    assert!(error.contains("no vae file found"), "{error}");
}

#[test]
fn controlnets_upscalers_vaes_and_encoders_are_told_apart() {
    assert_eq!(
        family_of(&[("control_model.input_hint_block.0.weight", &[4])]).2,
        Role::ControlNet
    );
    let esrgan = family_of(&[
        ("model.0.weight", &[64, 3, 3, 3]),
        ("model.1.sub.0.RDB1.conv1.0.weight", &[4]),
        ("conv_first.weight", &[64, 3, 3, 3]),
    ]);
    assert_eq!((esrgan.0.as_str(), esrgan.2), ("esrgan", Role::Upscaler));
    let sd_vae = family_of(&[("decoder.conv_in.weight", &[512, 4, 3, 3])]);
    assert_eq!((sd_vae.0.as_str(), sd_vae.2), ("sd", Role::Vae));
    let flux_vae = family_of(FLUX_VAE);
    assert_eq!(
        (flux_vae.0.as_str(), flux_vae.1.as_deref()),
        ("flux", Some("16ch"))
    );
    assert_eq!(family_of(CLIP_L).0, "clip_l");
    assert_eq!(
        family_of(&[("model.layers.0.self_attn.q_proj.weight", &[4, 4])]).0,
        "llm"
    );
}

#[test]
fn other_tools_folders_are_scanned_with_their_loras_and_changes_are_seen() {
    let ws = Workspace::new();
    let a1111 = ws.path("stable-diffusion-webui/models");
    std::fs::create_dir_all(a1111.join("Stable-diffusion")).unwrap();
    std::fs::create_dir_all(a1111.join("Lora")).unwrap();
    std::fs::copy(
        diffugen_testkit::test_model(),
        a1111.join("Stable-diffusion/dreamy.gguf"),
    )
    .unwrap();
    gguf_file(
        &a1111.join("Lora/ink.gguf"),
        &[("lora_unet_down_blocks_0.lora_up.weight", &[4, 4])],
    );
    let library = Library::with_extra_dirs(ws.models_dir(), vec![a1111.join("Stable-diffusion")]);
    let ids = library.ids();
    assert!(
        ids.contains(&"tiny".to_string()) && ids.contains(&"dreamy".to_string()),
        "{ids:?}"
    );
    assert!(library
        .resolve_lora("ink")
        .unwrap()
        .ends_with("Lora/ink.gguf"));
    assert!(
        !library.scan().iter().any(|e| e.id == "ink"),
        "LoRAs are not listed as models"
    );

    // A file added later is seen on the next scan.
    std::fs::copy(
        diffugen_testkit::test_model(),
        a1111.join("Stable-diffusion/later.gguf"),
    )
    .unwrap();
    assert!(library.ids().contains(&"later".to_string()));

    // The CLI takes the folders too.
    let output = ws.diffugen(&[
        "models",
        "--json",
        "--extra-models-dir",
        a1111.join("Stable-diffusion").to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", support::stderr(&output));
    let listed: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let ids: Vec<&str> = listed["cards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"dreamy") && ids.contains(&"tiny"), "{ids:?}");
}

#[test]
fn the_settings_file_shared_with_the_app_picks_folders_and_policy_and_flags_still_win() {
    let ws = Workspace::new();
    let other = ws.path("comfy/checkpoints");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::copy(diffugen_testkit::test_model(), other.join("shared.gguf")).unwrap();

    let set = ws.diffugen(&[
        "settings",
        "set",
        "extra_models_dirs",
        other.to_str().unwrap(),
    ]);
    assert!(set.status.success(), "{}", support::stderr(&set));
    let listed: serde_json::Value =
        serde_json::from_slice(&ws.diffugen(&["models", "--json"]).stdout).unwrap();
    let ids: Vec<&str> = listed["cards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&"shared"),
        "the folder from the settings is scanned: {ids:?}"
    );

    // The file's policy applies where no flag or environment variable says otherwise.
    ws.diffugen(&["settings", "set", "vram_policy", "always"]);
    let status = |extra: &[&str]| -> serde_json::Value {
        let output = std::process::Command::new(support::diffugen_bin())
            .arg("--data-dir")
            .arg(ws.data_dir())
            .args([
                "vram",
                "status",
                "--json",
                "--server",
                "http://127.0.0.1:9",
                "--ollama-url",
                "http://127.0.0.1:9",
            ])
            .args(extra)
            .env_remove("DIFFUGEN_VRAM_POLICY")
            .env_remove("OLLAMA_HOST")
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", support::stderr(&output));
        serde_json::from_slice(&output.stdout).unwrap()
    };
    assert_eq!(status(&[])["policy"], "always");
    // The environment wins over the file (the workspace runs with DIFFUGEN_VRAM_POLICY=never).
    let with_env: serde_json::Value = serde_json::from_slice(
        &ws.diffugen(&[
            "vram",
            "status",
            "--json",
            "--server",
            "http://127.0.0.1:9",
            "--ollama-url",
            "http://127.0.0.1:9",
        ])
        .stdout,
    )
    .unwrap();
    assert_eq!(with_env["policy"], "never");

    // Bad values are refused with the key and what is allowed; nothing is written.
    let bad = ws.diffugen(&["settings", "set", "vram_policy", "sometimes"]);
    assert!(!bad.status.success());
    assert!(support::stderr(&bad).contains(
        "invalid setting vram_policy: 'sometimes' is not one of always, auto, share, never"
    ));
    assert_eq!(status(&[])["policy"], "always");

    // Secrets are never printed.
    ws.diffugen(&["settings", "set", "api_key", "s3cret"]);
    let shown = String::from_utf8_lossy(&ws.diffugen(&["settings"]).stdout).into_owned();
    assert!(
        !shown.contains("s3cret") && shown.contains("(set)"),
        "{shown}"
    );

    // A broken file stops every command with a message naming it.
    std::fs::write(ws.path("settings.json"), "{ broken").unwrap();
    let broken = ws.diffugen(&["models"]);
    assert!(!broken.status.success());
    assert!(
        support::stderr(&broken).contains("settings.json: not valid JSON"),
        "{}",
        support::stderr(&broken)
    );
}

#[test]
fn a_model_copied_into_a_watched_folder_is_noticed_and_listed_without_a_rescan_by_hand() {
    use diffugen_models::FolderWatcher;
    use std::sync::mpsc;
    use std::time::Duration;

    let root = tempfile::tempdir().unwrap();
    let comfy = root.path().join("ComfyUI/models");
    std::fs::create_dir_all(comfy.join("checkpoints")).unwrap();
    let (tx, rx) = mpsc::channel();
    let watcher = FolderWatcher::start(
        std::slice::from_ref(&comfy),
        Duration::from_millis(300),
        move |paths| {
            let _ = tx.send(paths);
        },
    )
    .unwrap();
    assert_eq!(watcher.watched(), std::slice::from_ref(&comfy));
    let listed = |id: &str| Library::new(&comfy).scan().iter().any(|e| e.id == id);

    // A checkpoint lands in an existing subfolder, as a copy from an A1111 install would.
    let new = comfy.join("checkpoints/new-model.gguf");
    gguf_file(&new, &[TOKENS_768, UNET_IN, MIDDLE, OUT_71]);
    let changed = rx.recv_timeout(Duration::from_secs(10)).expect("noticed");
    assert!(changed.contains(&new), "{changed:?}");
    assert!(listed("new-model"));

    // A download in progress is not a model yet.
    std::fs::write(comfy.join("checkpoints/big.gguf.part"), b"half").unwrap();
    assert!(
        rx.recv_timeout(Duration::from_millis(1500)).is_err(),
        "a .part file is no change to the library"
    );

    // A whole folder of models arriving (unpacked, moved in) is noticed too, dots in its name or not.
    let unpacked = root.path().join("unpacked");
    std::fs::create_dir_all(&unpacked).unwrap();
    gguf_file(
        &unpacked.join("moved-in.gguf"),
        &[TOKENS_768, UNET_IN, MIDDLE, OUT_71],
    );
    std::fs::rename(&unpacked, comfy.join("FLUX.1-dev")).unwrap();
    rx.recv_timeout(Duration::from_secs(10)).expect("noticed");
    assert!(listed("moved-in"));

    // And one that goes.
    std::fs::remove_file(&new).unwrap();
    let changed = rx.recv_timeout(Duration::from_secs(10)).expect("noticed");
    assert!(changed.contains(&new), "{changed:?}");
    assert!(!listed("new-model"));

    // Dropping the watcher stops it.
    drop(watcher);
    gguf_file(&comfy.join("after.gguf"), &[TOKENS_768]);
    assert!(rx.recv_timeout(Duration::from_millis(1000)).is_err());
}

/// A full-size FLUX.1-schnell set as sparse files (real headers, no weights on disk): Q4_0 diffusion model
/// (11.9 B parameters), T5-XXL fp16 (4.76 B), CLIP-L fp16 (123 M), the 16-channel VAE in f32 (83.8 M).
fn full_size_flux(root: &Path) {
    let tensor = |name: &str, ne: Vec<u64>, dtype| TensorInfo {
        name: name.into(),
        ne,
        dtype,
    };
    std::fs::create_dir_all(root).unwrap();
    let files = [
        (
            "flux1-schnell-q4_0.gguf",
            vec![
                tensor(
                    "double_blocks.0.img_attn.qkv.weight",
                    vec![3072, 9216],
                    DType::Q4_0,
                ),
                tensor("img_in.weight", vec![64, 3072], DType::F16),
                tensor(
                    "single_blocks.0.linear1.weight",
                    vec![3072, 3_864_000],
                    DType::Q4_0,
                ),
            ],
        ),
        (
            "t5xxl_fp16.gguf",
            vec![
                tensor(
                    "encoder.block.0.layer.0.SelfAttention.q.weight",
                    vec![4096, 4096],
                    DType::F16,
                ),
                tensor(
                    "encoder.block.1.layer.1.DenseReluDense.wi_0.weight",
                    vec![4096, 1_158_000],
                    DType::F16,
                ),
            ],
        ),
        (
            "clip_l.gguf",
            vec![
                tensor(
                    "text_model.embeddings.token_embedding.weight",
                    vec![768, 49408],
                    DType::F16,
                ),
                tensor(
                    "text_model.encoder.layers.0.mlp.fc1.weight",
                    vec![768, 110_700],
                    DType::F16,
                ),
            ],
        ),
        (
            "ae.gguf",
            vec![
                tensor("decoder.conv_in.weight", vec![3, 3, 16, 512], DType::F32),
                tensor(
                    "decoder.up.0.block.0.conv1.weight",
                    vec![3, 3, 512, 18_150],
                    DType::F32,
                ),
            ],
        ),
    ];
    for (name, tensors) in files {
        gguf::write_sparse(&root.join(name), &tensors).unwrap();
    }
}

fn fit_json(ws: &Workspace, args: &[&str]) -> (serde_json::Value, std::process::Output) {
    let mut all = vec!["models", "fit", "flux-schnell", "--json"];
    all.extend_from_slice(args);
    let output = ws.diffugen(&all);
    let value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", support::stderr(&output)));
    (value, output)
}

#[test]
fn models_fit_plans_flux_schnell_into_an_8_gib_card_with_the_t5_off_the_gpu() {
    let ws = Workspace::new();
    full_size_flux(&ws.models_dir());
    let (plan, output) = fit_json(
        &ws,
        &[
            "--width",
            "1024",
            "--height",
            "1024",
            "--vram-total",
            "8",
            "--vram-free",
            "7.6",
            "--ram-free",
            "14",
        ],
    );
    assert!(output.status.success(), "{}", support::stderr(&output));
    assert_eq!(plan["fits"], true, "{plan:#}");
    let gib = f64::from(1u32 << 30);
    assert!(
        plan["estimated_vram_peak_bytes"].as_f64().unwrap() <= 7.6 * gib,
        "{plan:#}"
    );
    assert!(
        plan["estimated_ram_peak_bytes"].as_f64().unwrap() <= 14.0 * gib,
        "{plan:#}"
    );
    assert_ne!(plan["placement"]["t5xxl"], "gpu", "{plan:#}");
    for part in ["diffusion", "vae", "clip_l", "t5xxl"] {
        assert!(
            ["gpu", "cpu", "offload"].contains(&plan["placement"][part].as_str().unwrap_or("")),
            "{part}: {plan:#}"
        );
    }
    assert!(plan["vae_tiling"].is_boolean() && plan["advice"].as_array().unwrap().is_empty());
    assert!(plan.get("max_vram_gib").is_some());
}

#[test]
fn models_fit_says_flux_at_2048_does_not_fit_1_gib_of_vram_and_4_of_ram_and_what_to_do() {
    let ws = Workspace::new();
    full_size_flux(&ws.models_dir());
    let (plan, output) = fit_json(
        &ws,
        &[
            "-W",
            "2048",
            "-H",
            "2048",
            "--vram-total",
            "1",
            "--vram-free",
            "1",
            "--ram-free",
            "4",
        ],
    );
    assert_eq!(output.status.code(), Some(1), "does not fit: exit status 1");
    assert_eq!(plan["fits"], false);
    let advice: Vec<&str> = plan["advice"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    assert!(advice.len() >= 2, "{advice:#?}");
    assert!(
        advice
            .iter()
            .any(|a| a.contains("more free memory") || a.contains("smaller")),
        "{advice:#?}"
    );

    let bad = ws.diffugen(&[
        "models",
        "fit",
        "flux-schnell",
        "--vram-free",
        "9",
        "--vram-total",
        "8",
    ]);
    assert!(!bad.status.success());
    assert!(
        support::stderr(&bad).contains("--vram-free"),
        "{}",
        support::stderr(&bad)
    );
}

#[test]
fn a_smaller_copy_of_a_flux_sets_t5_becomes_a_model_of_its_own_and_the_original_stays_selectable() {
    let dir = tempfile::tempdir().unwrap();
    flux_tree(dir.path());
    let library = Library::new(dir.path());
    let conversion = library
        .plan_conversion(
            "flux-schnell",
            Some(diffugen_models::Part::T5xxl),
            "q8_0".parse().unwrap(),
            None,
        )
        .unwrap();
    let preview = &conversion.preview;
    assert_eq!(preview.model_id, "flux1-schnell-q4_0");
    assert!(preview.input.ends_with("t5xxl_fp16.gguf"), "{preview:?}");
    assert!(
        preview.output.ends_with("t5xxl_fp16-q8_0.gguf"),
        "{preview:?}"
    );
    assert_eq!(preview.new_model_id, "flux1-schnell-q4_0-t5xxl-q8_0");
    assert!(preview.expected_bytes <= preview.current_bytes);

    // The engine writes the copy (here: the same small header), then the library lists what uses it.
    std::fs::copy(&preview.input, &preview.output).unwrap();
    let id = library.finish_conversion(&conversion).unwrap();
    let copy = library.resolve(&id).unwrap();
    assert_eq!(
        copy.components.t5xxl.as_deref(),
        Some(Path::new(&preview.output))
    );
    let original = library.resolve("flux1-schnell-q4_0").unwrap();
    assert!(original
        .components
        .t5xxl
        .unwrap()
        .ends_with("t5xxl_fp16.gguf"));
    let ids: Vec<String> = library
        .cards()
        .into_iter()
        .filter(|c| c.error.is_none())
        .map(|c| c.id)
        .collect();
    assert!(
        ids.contains(&id) && ids.contains(&"flux1-schnell-q4_0".to_string()),
        "{ids:?}"
    );

    let err = library
        .plan_conversion(
            "flux-schnell",
            Some(diffugen_models::Part::ClipG),
            "q8_0".parse().unwrap(),
            None,
        )
        .unwrap_err();
    assert_eq!(err.field, "part");
    assert!(
        err.message.contains("has no clip_g part") && err.message.contains("t5xxl"),
        "{err}"
    );
    let err = library
        .plan_conversion(
            "flux-schnell",
            None,
            "q8_0".parse().unwrap(),
            Some("../outside"),
        )
        .unwrap_err();
    assert_eq!(err.field, "output");
    assert!(err.message.contains("not a file name"), "{err}");
}

#[test]
fn a_preset_may_name_only_model_files_inside_the_model_folders_and_says_so_the_same_whether_the_outside_file_exists(
) {
    let models = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    gguf_file(&outside.path().join("real.gguf"), CLIP_L);
    gguf_file(&models.path().join("flux1-schnell-q4_0.gguf"), FLUX_DIT);
    std::fs::write(models.path().join("notes.txt"), "not a model").unwrap();
    let write = |name: &str, preset: serde_json::Value| {
        std::fs::write(
            models.path().join(format!("{name}.preset.json")),
            preset.to_string(),
        )
        .unwrap()
    };
    let real = outside.path().join("real.gguf");
    let missing = outside.path().join("missing.gguf");
    write(
        "existing",
        json!({"diffusion_model": "flux1-schnell-q4_0.gguf", "t5xxl": real}),
    );
    write(
        "missing",
        json!({"diffusion_model": "flux1-schnell-q4_0.gguf", "t5xxl": missing}),
    );
    write(
        "climbing",
        json!({"diffusion_model": "flux1-schnell-q4_0.gguf", "t5xxl": "../../etc/passwd.gguf"}),
    );
    write(
        "text",
        json!({"diffusion_model": "flux1-schnell-q4_0.gguf", "t5xxl": "notes.txt"}),
    );
    let library = Library::new(models.path());
    let cards = library.cards();
    let reason = |id: &str| {
        cards
            .iter()
            .find(|c| c.id == id)
            .and_then(|c| c.error.clone())
            .unwrap_or_else(|| panic!("{id} should be listed as invalid: {cards:#?}"))
    };
    for id in ["existing", "missing", "climbing"] {
        let why = reason(id);
        assert!(why.contains("outside the model folders"), "{id}: {why}");
        assert!(
            !why.contains("not found"),
            "{id} must not tell whether the file exists: {why}"
        );
    }
    assert!(
        reason("text").contains("not a model file"),
        "{}",
        reason("text")
    );
    let err = library.resolve("existing").unwrap_err().to_string();
    assert!(err.contains("outside the model folders"), "{err}");
}

#[test]
fn a_listing_piped_into_a_reader_that_stops_early_ends_quietly_not_with_a_panic() {
    use std::os::unix::process::ExitStatusExt;
    let ws = Workspace::new();
    for args in [
        &["models"][..],
        &["models", "catalog"],
        &["settings", "show"],
    ] {
        let mut child = std::process::Command::new(support::diffugen_bin())
            .arg("--data-dir")
            .arg(ws.data_dir())
            .args(args)
            .env_remove("DIFFUGEN_MODELS_DIR")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // The reader is gone before anything is written, as `| head -0` would be.
        drop(child.stdout.take());
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(
            output.status.success() || output.status.signal() == Some(libc::SIGPIPE),
            "{args:?}: {:?} {stderr}",
            output.status
        );
    }
}

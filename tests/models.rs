//! Identifying models from their headers alone, as sd.cpp would, and listing them with `diffugen models`.

mod support;

use std::io::Write;
use std::path::Path;

use diffugen_models::header::{self, HeaderError};
use diffugen_models::{identify, Library, Role};
use diffugen_testkit::gguf::{self, DType, TensorInfo};
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
    (id.family, id.variant, id.role)
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
    let entries: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let tiny = &entries.as_array().unwrap()[0];
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
    assert_eq!(identify(&header.tensors).family, "flux");
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
        .contains("not a GGUF or safetensors"));
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
    assert_eq!(model.family, "flux");
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

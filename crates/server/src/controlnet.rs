//! The sd-webui-controlnet API A1111 clients speak, as far as DiffuGen goes today: the preprocessors
//! (`/controlnet/module_list`, `/controlnet/detect` — canny from sd.cpp, `none` for maps made elsewhere) and the
//! ControlNet models in the models folders (`/controlnet/model_list`). Rendering with a ControlNet is not available
//! yet: a txt2img/img2img whose `alwayson_scripts.controlnet` has an enabled unit is refused naming it.

use axum::extract::State;
use axum::Json;
use base64::Engine as _;
use diffugen_engine::control::{canny_thresholds, detect, ControlModule, CONTROL_MODULES};
use diffugen_models::Role;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::body::A1111Body;
use crate::error::A1111Error;
use crate::{ApiError, AppState};

/// `GET /controlnet/model_list`: the ControlNet models in the models folders, by id.
pub async fn model_list(State(state): State<AppState>) -> Json<Value> {
    let library = state.library();
    let mut models: Vec<String> = tokio::task::spawn_blocking(move || {
        library
            .scan()
            .into_iter()
            .filter(|e| e.role == Role::ControlNet && e.error.is_none())
            .map(|e| e.id)
            .collect()
    })
    .await
    .unwrap_or_default();
    models.sort();
    models.dedup();
    Json(json!({ "model_list": models }))
}

/// `GET /controlnet/module_list`: the preprocessors, with their sliders as the extension describes them.
pub async fn module_list() -> Json<Value> {
    let names: Vec<&str> = CONTROL_MODULES.iter().map(|(_, n)| *n).collect();
    let detail = json!({
        "none": { "model_free": false, "sliders": [] },
        "canny": {
            "model_free": false,
            "sliders": [
                { "name": "Preprocessor Resolution", "value": 512, "min": 64, "max": 2048 },
                { "name": "Low Threshold", "value": 100, "min": 1, "max": 255 },
                { "name": "High Threshold", "value": 200, "min": 1, "max": 255 },
            ],
        },
    });
    Json(json!({ "module_list": names, "module_detail": detail }))
}

/// `POST /controlnet/detect`.
#[derive(Debug, Deserialize)]
#[serde(default)]
pub struct DetectRequest {
    controlnet_module: String,
    controlnet_input_images: Vec<String>,
    controlnet_processor_res: u32,
    controlnet_threshold_a: f64,
    controlnet_threshold_b: f64,
}

impl Default for DetectRequest {
    /// The extension's own defaults.
    fn default() -> Self {
        DetectRequest {
            controlnet_module: "none".into(),
            controlnet_input_images: Vec::new(),
            controlnet_processor_res: 512,
            controlnet_threshold_a: 100.0,
            controlnet_threshold_b: 200.0,
        }
    }
}

/// `POST /controlnet/detect` → `{"images": [base64 PNG maps], "info": "Success"}`.
pub async fn detect_maps(
    A1111Body(body): A1111Body<DetectRequest>,
) -> Result<Json<Value>, A1111Error> {
    let module: ControlModule = body
        .controlnet_module
        .parse()
        .map_err(|e| ApiError::invalid("controlnet_module", format!("controlnet_module: {e}")))?;
    if body.controlnet_input_images.is_empty() {
        return Err(ApiError::invalid(
            "controlnet_input_images",
            "controlnet_input_images: at least one base64 image is required",
        )
        .into());
    }
    if !(64..=2048).contains(&body.controlnet_processor_res) {
        return Err(ApiError::invalid(
            "controlnet_processor_res",
            format!(
                "controlnet_processor_res: must be 64 to 2048, got {}",
                body.controlnet_processor_res
            ),
        )
        .into());
    }
    let thresholds = match module {
        ControlModule::Canny => {
            canny_thresholds(body.controlnet_threshold_a, body.controlnet_threshold_b).map_err(
                |e| {
                    let field = if e.starts_with("threshold_b") {
                        "controlnet_threshold_b"
                    } else {
                        "controlnet_threshold_a"
                    };
                    ApiError::invalid(field, format!("controlnet_{e}"))
                },
            )?
        }
        ControlModule::None => (0.0, 0.0),
    };
    let mut images = Vec::with_capacity(body.controlnet_input_images.len());
    for (index, text) in body.controlnet_input_images.iter().enumerate() {
        let field = format!("controlnet_input_images[{index}]");
        let bytes = diffugen_engine::params::image_data(text)
            .map_err(|e| ApiError::invalid(&field, format!("{field}: is not valid base64: {e}")))?;
        let resolution = Some(body.controlnet_processor_res);
        // Image work that blocks: off the threads that answer other requests.
        let map =
            tokio::task::spawn_blocking(move || detect(module, &bytes, resolution, thresholds))
                .await
                .map_err(|e| {
                    ApiError::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
                })?
                .map_err(|e| ApiError::invalid(&field, format!("{field}: {e}")))?;
        images.push(Value::String(
            base64::engine::general_purpose::STANDARD.encode(map),
        ));
    }
    Ok(Json(json!({ "images": images, "info": "Success" })))
}

/// Refuses a txt2img/img2img that asks A1111 scripts to run: DiffuGen runs none, and a ControlNet unit silently
/// skipped would give an image the client did not ask for. Empty script entries (and disabled units) are fine.
pub fn refuse_scripts(scripts: Option<&Map<String, Value>>) -> Result<(), ApiError> {
    for (name, script) in scripts.into_iter().flatten() {
        let args = script.get("args").and_then(Value::as_array);
        let active = match args {
            None => !script.is_null() && script.as_object().is_none_or(|o| !o.is_empty()),
            Some(args) => args.iter().any(|unit| {
                // A ControlNet unit is on unless it says `enabled: false` (the extension's API default).
                unit.get("enabled").and_then(Value::as_bool) != Some(false)
            }),
        };
        if !active {
            continue;
        }
        let field = format!("alwayson_scripts.{name}");
        let message = if name.eq_ignore_ascii_case("controlnet") {
            format!(
                "{field}: rendering with a ControlNet is not available in DiffuGen yet (its preprocessors are: \
                 /controlnet/detect); send no enabled unit"
            )
        } else {
            format!("{field}: DiffuGen runs no AUTOMATIC1111 scripts; leave it out")
        };
        return Err(ApiError::invalid(&field, message));
    }
    Ok(())
}

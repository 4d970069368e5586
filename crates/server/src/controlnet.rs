//! The sd-webui-controlnet API A1111 clients speak, as far as DiffuGen goes today: the preprocessors
//! (`/controlnet/module_list`, `/controlnet/detect` — canny from sd.cpp, `none` for maps made elsewhere) and the
//! ControlNet models in the models folders (`/controlnet/model_list`), and a txt2img/img2img's
//! `alwayson_scripts.controlnet` unit turned into DiffuGen's `control` request.

use axum::extract::State;
use axum::Json;
use base64::Engine as _;
use diffugen_engine::control::{
    canny_thresholds, detect, ControlModule, ControlRequest, CONTROL_MODULES,
};
use diffugen_engine::params::ImageInput;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::body::A1111Body;
use crate::error::A1111Error;
use crate::{ApiError, AppState};

/// `GET /controlnet/model_list`: the ControlNet models in the models folders, by id.
pub async fn model_list(State(state): State<AppState>) -> Json<Value> {
    let library = state.library();
    let models: Vec<String> = tokio::task::spawn_blocking(move || {
        library.controlnets().into_iter().map(|e| e.id).collect()
    })
    .await
    .unwrap_or_default();
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
                { "name": "Low Threshold", "value": 100, "min": 0, "max": 255 },
                { "name": "High Threshold", "value": 200, "min": 0, "max": 255 },
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
    /// `controlnet_images` is the name webuiapi sends.
    #[serde(alias = "controlnet_images")]
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

/// The ControlNet unit of a txt2img/img2img's `alwayson_scripts.controlnet.args` (sd-webui-controlnet's API) as
/// DiffuGen's control request, for a render of `width` × `height`. One enabled unit at a time; what DiffuGen cannot
/// honour (a guidance window, a control mode, cropping to another aspect ratio, a mask, any other script) is refused
/// naming it, never skipped. `None` when no unit is enabled.
pub fn control_from_scripts(
    scripts: Option<&Map<String, Value>>,
    (width, height): (u32, u32),
) -> Result<Option<ControlRequest>, ApiError> {
    let mut control = None;
    for (name, script) in scripts.into_iter().flatten() {
        let args = script.get("args").and_then(Value::as_array);
        if !name.eq_ignore_ascii_case("controlnet") {
            let active = match args {
                None => !script.is_null() && script.as_object().is_none_or(|o| !o.is_empty()),
                Some(args) => !args.is_empty(),
            };
            if active {
                let field = format!("alwayson_scripts.{name}");
                return Err(ApiError::invalid(
                    &field,
                    format!("{field}: DiffuGen runs no AUTOMATIC1111 scripts; leave it out"),
                ));
            }
            continue;
        }
        let units: Vec<(usize, &Map<String, Value>)> = args
            .into_iter()
            .flatten()
            .enumerate()
            .filter_map(|(i, u)| u.as_object().map(|o| (i, o)))
            // A unit is on unless it says `enabled: false` (the extension's API default).
            .filter(|(_, u)| u.get("enabled").and_then(Value::as_bool) != Some(false))
            .collect();
        if units.len() > 1 {
            return Err(ApiError::invalid(
                &format!("alwayson_scripts.{name}.args"),
                format!(
                    "alwayson_scripts.{name}.args: {} enabled units; DiffuGen runs one ControlNet at a time",
                    units.len()
                ),
            ));
        }
        if let Some((index, unit)) = units.first() {
            control = Some(unit_request(
                &format!("alwayson_scripts.{name}.args[{index}]"),
                unit,
                (width, height),
            )?);
        }
    }
    Ok(control)
}

fn unit_request(
    at: &str,
    unit: &Map<String, Value>,
    (width, height): (u32, u32),
) -> Result<ControlRequest, ApiError> {
    let invalid = |key: &str, message: String| {
        let field = format!("{at}.{key}");
        ApiError::invalid(&field, format!("{field}: {message}"))
    };
    let number = |key: &str| -> Result<Option<f64>, ApiError> {
        match unit.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| invalid(key, "must be a number".into())),
        }
    };
    let text = |key: &str| unit.get(key).and_then(Value::as_str).map(str::trim);
    for (key, value) in unit {
        let known = matches!(
            key.as_str(),
            "enabled"
                | "module"
                | "model"
                | "weight"
                | "image"
                | "input_image"
                | "processor_res"
                | "threshold_a"
                | "threshold_b"
                | "guidance"
                | "guidance_start"
                | "guidance_end"
                | "control_mode"
                | "guessmode"
                | "resize_mode"
                | "pixel_perfect"
                | "low_vram"
                | "lowvram"
                | "save_detected_map"
                | "hr_option"
                | "mask"
                | "mask_image"
        );
        if !known && !value.is_null() {
            return Err(invalid(
                key,
                "is not supported by DiffuGen's ControlNet; leave it out".into(),
            ));
        }
    }
    for key in ["mask", "mask_image"] {
        if unit.get(key).is_some_and(|v| !v.is_null() && v != "") {
            return Err(invalid(
                key,
                "a ControlNet mask is not supported; leave it out".into(),
            ));
        }
    }
    if number("guidance_start")?.is_some_and(|v| v != 0.0) {
        return Err(invalid(
            "guidance_start",
            "only 0 (the whole render) is supported".into(),
        ));
    }
    // `guidance` is the older name of guidance_end (older webuiapi releases still send it, as 1.0).
    for key in ["guidance_end", "guidance"] {
        if number(key)?.is_some_and(|v| v != 1.0) {
            return Err(invalid(
                key,
                "only 1 (the whole render) is supported".into(),
            ));
        }
    }
    if unit
        .get("guessmode")
        .is_some_and(|v| v == true || v.as_f64().is_some_and(|n| n != 0.0))
    {
        return Err(invalid(
            "guessmode",
            "guess mode (now control_mode) is not supported; send false".into(),
        ));
    }
    match unit.get("control_mode") {
        None | Some(Value::Null) => {}
        Some(v) if v == 0 || v == "Balanced" => {}
        Some(_) => {
            return Err(invalid(
                "control_mode",
                "only 0 / \"Balanced\" is supported".into(),
            ))
        }
    }
    let module: ControlModule = text("module")
        .unwrap_or("none")
        .parse()
        .map_err(|e: String| invalid("module", e))?;
    let model = text("model")
        .map(|m| m.split(" [").next().unwrap_or(m).trim().to_string())
        .filter(|m| !m.is_empty() && m != "None")
        .ok_or_else(|| {
            invalid(
                "model",
                "a ControlNet model is required (see /controlnet/model_list)".into(),
            )
        })?;
    let image_text = match unit.get("image").or_else(|| unit.get("input_image")) {
        Some(Value::String(s)) => s.clone(),
        // The extension also takes {"image": base64, "mask": ...}.
        Some(Value::Object(o)) => o
            .get("image")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| invalid("image", "must be a base64 image".into()))?,
        _ => {
            return Err(invalid(
                "image",
                "a base64 control image is required".into(),
            ))
        }
    };
    let bytes = diffugen_engine::params::image_data(&image_text)
        .map_err(|e| invalid("image", format!("is not valid base64: {e}")))?;
    // Cropping or filling to another aspect ratio would change the map; a stretch is what DiffuGen does.
    let crops = match unit.get("resize_mode") {
        None | Some(Value::Null) => true,
        Some(v) => !(v == 0 || v == "Just Resize"),
    };
    if crops {
        if let Ok(Ok((w, h))) = image::ImageReader::new(std::io::Cursor::new(&bytes))
            .with_guessed_format()
            .map(|r| r.into_dimensions())
        {
            if u64::from(w) * u64::from(height) != u64::from(h) * u64::from(width) {
                return Err(invalid(
                    "resize_mode",
                    format!(
                        "cropping or filling the {w}x{h} control image to {width}x{height} is not available; send \
                         resize_mode \"Just Resize\" (0) to stretch it, or an image of the render's aspect ratio"
                    ),
                ));
            }
        }
    }
    let pixel_perfect = unit.get("pixel_perfect").and_then(Value::as_bool) == Some(true);
    Ok(ControlRequest {
        model,
        image: ImageInput::Bytes(bytes),
        module: Some(module),
        strength: number("weight")?.map(|w| w as f32),
        // -1 is the extension's "the preprocessor's default".
        low_threshold: number("threshold_a")?.filter(|v| *v != -1.0),
        high_threshold: number("threshold_b")?.filter(|v| *v != -1.0),
        // Pixel perfect: the preprocessor runs at the render's own size (DiffuGen's default).
        processor_res: if pixel_perfect {
            None
        } else {
            number("processor_res")?.map(|r| r as u32)
        },
    })
}

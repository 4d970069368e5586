//! Upscaling over HTTP: DiffuGen's own `POST /api/v1/upscale` (a job in the shared queue, followed like any other)
//! and AUTOMATIC1111's `/sdapi/v1/extra-single-image` and `/sdapi/v1/extra-batch-images` (answered when done).
//! Images come in the request or, natively, by gallery id; nothing on the server's disk is opened by path.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use base64::Engine as _;
use diffugen_engine::upscale::{SourceImage, UpscaleRequest};
use diffugen_engine::{Destination, Work};
use diffugen_jobs::{JobInfo, Outcome};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::body::{A1111Body, JsonBody};
use crate::error::A1111Error;
use crate::native::{param_error, source_of};
use crate::{ApiError, AppState};

/// Validates an upscale of `images` and puts it on the queue; `rename` maps our field names to the client's.
pub(crate) fn enqueue_upscale(
    state: &AppState,
    request: &UpscaleRequest,
    images: &[SourceImage],
    source: &str,
    rename: impl Fn(&str) -> &str,
) -> Result<String, ApiError> {
    let library = state.library();
    // Decoding images and reading model headers block: off the threads that answer other requests.
    let validate = || diffugen_engine::upscale::validate(request, images, &library);
    let checked = crate::blocking(validate);
    let spec = checked.map_err(|e| param_error(&e, rename))?;
    Ok(state.jobs().submit_work(
        Work::Upscale(Box::new(spec)),
        Destination::Folder(state.runtime.outputs_dir().to_path_buf()),
        source,
    )?)
}

pub(crate) fn decode(field: &str, text: &str) -> Result<Vec<u8>, ApiError> {
    diffugen_engine::params::image_data(text)
        .map_err(|e| ApiError::invalid(field, format!("{field}: is not valid base64: {e}")))
}

/// `POST /api/v1/upscale`: the image as base64 (`image`, or several as `images`) or a gallery image by id.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NativeUpscale {
    image: Option<String>,
    images: Option<Vec<String>>,
    gallery_id: Option<u32>,
    upscaler: Option<String>,
    scale: Option<f64>,
    width: Option<u32>,
    height: Option<u32>,
    tile_size: Option<u32>,
}

/// `POST /api/v1/upscale` → 202 with the job (follow it at `/api/v1/jobs/{id}/events`); the result is recorded in
/// the gallery, linked to a gallery source.
pub async fn submit(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    JsonBody(body): JsonBody<NativeUpscale>,
) -> Result<(StatusCode, Json<JobInfo>), ApiError> {
    let source = source_of(&headers);
    let given = [
        body.image.is_some(),
        body.images.is_some(),
        body.gallery_id.is_some(),
    ];
    if given.iter().filter(|g| **g).count() != 1 {
        return Err(ApiError::invalid(
            "image",
            "image: send exactly one of `image` (base64), `images` (a list of base64) or `gallery_id`",
        ));
    }
    let mut images = Vec::new();
    if let Some(image) = &body.image {
        images.push(SourceImage {
            bytes: decode("image", image)?,
            source: None,
        });
    }
    for (index, image) in body.images.iter().flatten().enumerate() {
        images.push(SourceImage {
            bytes: decode(&format!("images[{index}]"), image)?,
            source: None,
        });
    }
    if let Some(id) = body.gallery_id {
        images.push(gallery_image(&state, id).await?);
    }
    let request = UpscaleRequest {
        upscaler: body.upscaler,
        scale: body.scale,
        width: body.width,
        height: body.height,
        tile_size: body.tile_size,
    };
    let id = enqueue_upscale(&state, &request, &images, source, |f| f)?;
    Ok((StatusCode::ACCEPTED, Json(state.jobs().get(&id)?)))
}

/// A gallery image's bytes, as the source of an upscale (`gallery:<id>` in the result's record).
pub(crate) async fn gallery_image(state: &AppState, id: u32) -> Result<SourceImage, ApiError> {
    let gallery = state
        .jobs()
        .gallery()
        .cloned()
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "this server keeps no gallery"))?;
    let bytes = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, String> {
        let entry = gallery.get(id).map_err(|e| e.to_string())?;
        std::fs::read(&entry.path).map_err(|e| format!("cannot read {}: {e}", entry.path))
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    .map_err(|message| ApiError::invalid("gallery_id", format!("gallery_id: {message}")))?;
    Ok(SourceImage {
        bytes,
        source: Some(format!("gallery:{id}")),
    })
}

/// A1111's extras request (`/sdapi/v1/extra-single-image` and `-batch-images`): the fields DiffuGen reads, and the
/// face restorers and second upscaler it cannot run, refused when they would change the result.
#[derive(Debug, Deserialize)]
#[serde(default)]
pub struct ExtrasRequest {
    /// 0: by `upscaling_resize`; 1: to `upscaling_resize_w` × `upscaling_resize_h`.
    resize_mode: u32,
    /// Whether the answer carries the images (A1111's own switch).
    show_extras_results: bool,
    gfpgan_visibility: f64,
    codeformer_visibility: f64,
    /// Only used by CodeFormer, which DiffuGen refuses above: accepted and without effect.
    #[serde(rename = "codeformer_weight")]
    _codeformer_weight: f64,
    upscaling_resize: f64,
    upscaling_resize_w: u32,
    upscaling_resize_h: u32,
    upscaling_crop: bool,
    upscaler_1: String,
    upscaler_2: String,
    extras_upscaler_2_visibility: f64,
    /// Upscale before face restoration, which DiffuGen refuses above: accepted and without effect.
    #[serde(rename = "upscale_first")]
    _upscale_first: bool,
    /// extra-single-image
    image: Option<String>,
    /// extra-batch-images: `[{"data": base64, "name": "..."}]`
    #[serde(rename = "imageList")]
    image_list: Option<Vec<BatchImage>>,
}

impl Default for ExtrasRequest {
    /// A1111's own defaults.
    fn default() -> Self {
        ExtrasRequest {
            resize_mode: 0,
            show_extras_results: true,
            gfpgan_visibility: 0.0,
            codeformer_visibility: 0.0,
            _codeformer_weight: 0.0,
            upscaling_resize: 2.0,
            upscaling_resize_w: 512,
            upscaling_resize_h: 512,
            upscaling_crop: true,
            upscaler_1: "None".into(),
            upscaler_2: "None".into(),
            extras_upscaler_2_visibility: 0.0,
            _upscale_first: false,
            image: None,
            image_list: None,
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct BatchImage {
    data: String,
    #[serde(default)]
    name: Option<String>,
}

/// Our field names as A1111's extras know them.
fn extras_field(field: &str) -> &str {
    match field {
        "upscaler" => "upscaler_1",
        "scale" => "upscaling_resize",
        "width" => "upscaling_resize_w",
        "height" => "upscaling_resize_h",
        "images" => "imageList",
        other if other.starts_with("images[") => "imageList",
        other => other,
    }
}

/// Turns an extras request into an upscale, or says which field DiffuGen cannot honour. `None`: nothing to do
/// (`upscaler_1` "None"), the images come back as they are, as A1111 does.
fn extras_upscale(body: &ExtrasRequest) -> Result<Option<UpscaleRequest>, ApiError> {
    for (field, value) in [
        ("gfpgan_visibility", body.gfpgan_visibility),
        ("codeformer_visibility", body.codeformer_visibility),
    ] {
        if value > 0.0 {
            return Err(ApiError::invalid(
                field,
                format!("{field}: face restoration is not available in DiffuGen; send 0"),
            ));
        }
    }
    if body.extras_upscaler_2_visibility > 0.0 && body.upscaler_2 != "None" {
        return Err(ApiError::invalid(
            "upscaler_2",
            "upscaler_2: blending a second upscaler is not available in DiffuGen; send \"None\" or \
             extras_upscaler_2_visibility 0",
        ));
    }
    if body.upscaler_1 == "None" {
        return Ok(None);
    }
    let mut request = UpscaleRequest {
        upscaler: Some(body.upscaler_1.clone()),
        ..UpscaleRequest::default()
    };
    match body.resize_mode {
        0 => request.scale = Some(body.upscaling_resize),
        1 => {
            request.width = Some(body.upscaling_resize_w);
            request.height = Some(body.upscaling_resize_h);
        }
        other => {
            return Err(ApiError::invalid(
                "resize_mode",
                format!("resize_mode: must be 0 (scale by upscaling_resize) or 1 (to upscaling_resize_w × upscaling_resize_h), got {other}"),
            ))
        }
    }
    Ok(Some(request))
}

/// Refuses `upscaling_crop` when it would crop: a target size of another aspect ratio than the image.
fn check_crop(body: &ExtrasRequest, images: &[SourceImage]) -> Result<(), ApiError> {
    if body.resize_mode != 1 || !body.upscaling_crop {
        return Ok(());
    }
    for image in images {
        let Ok(size) = image::ImageReader::new(std::io::Cursor::new(&image.bytes))
            .with_guessed_format()
            .map_err(|_| ())
            .and_then(|r| r.into_dimensions().map_err(|_| ()))
        else {
            continue;
        };
        let (w, h) = (body.upscaling_resize_w, body.upscaling_resize_h);
        if u64::from(size.0) * u64::from(h) != u64::from(size.1) * u64::from(w) {
            return Err(ApiError::invalid(
                "upscaling_crop",
                format!(
                    "upscaling_crop: cropping a {}x{} image to {w}x{h} is not available in DiffuGen; send \
                     upscaling_crop: false to stretch it, or a size of the same aspect ratio",
                    size.0, size.1
                ),
            ));
        }
    }
    Ok(())
}

/// Runs an extras request to the end: the upscaled images as base64 PNGs and the `html_info` A1111 answers with.
async fn extras(
    state: &AppState,
    body: &ExtrasRequest,
    images: Vec<SourceImage>,
    source: &str,
) -> Result<(Vec<String>, String), ApiError> {
    let Some(request) = extras_upscale(body)? else {
        let unchanged = images
            .iter()
            .map(|i| base64::engine::general_purpose::STANDARD.encode(&i.bytes))
            .collect();
        return Ok((unchanged, String::new()));
    };
    check_crop(body, &images)?;
    let id = enqueue_upscale(state, &request, &images, source, extras_field)?;
    let _guard = crate::fields::DropIfQueued {
        jobs: state.jobs().clone(),
        id: id.clone(),
    };
    let outputs = match state.jobs().wait(&id).await.map_err(ApiError::from)? {
        Outcome::Done(outputs) => outputs,
        Outcome::Failed { error, kind } => return Err(ApiError::job_failed(&error, kind)),
        Outcome::Cancelled(reason) => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the upscale was cancelled: {reason}"),
            ))
        }
    };
    let mut encoded = Vec::with_capacity(outputs.len());
    for output in outputs.iter().filter(|_| body.show_extras_results) {
        let bytes = tokio::fs::read(&output.path).await.map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot read {}: {e}", output.path),
            )
        })?;
        encoded.push(base64::engine::general_purpose::STANDARD.encode(&bytes));
    }
    let info = outputs
        .first()
        .map(|o| {
            format!(
                "Postprocess upscale to: {}x{}, Postprocess upscaler: {}",
                o.width, o.height, body.upscaler_1
            )
        })
        .unwrap_or_default();
    Ok((encoded, format!("<p>{info}</p>")))
}

/// `POST /sdapi/v1/extra-single-image` → `{"image": base64 PNG, "html_info": ...}`.
pub async fn extra_single_image(
    State(state): State<AppState>,
    A1111Body(body): A1111Body<ExtrasRequest>,
) -> Result<Json<Value>, A1111Error> {
    let image = body
        .image
        .as_deref()
        .ok_or_else(|| ApiError::invalid("image", "image: a base64 image is required"))?;
    let images = vec![SourceImage {
        bytes: decode("image", image)?,
        source: None,
    }];
    let (mut out, html_info) = extras(&state, &body, images, "a1111-extras").await?;
    Ok(Json(
        json!({ "image": out.pop().unwrap_or_default(), "html_info": html_info }),
    ))
}

/// `POST /sdapi/v1/extra-batch-images` → `{"images": [base64 PNG, ...], "html_info": ...}`.
pub async fn extra_batch_images(
    State(state): State<AppState>,
    A1111Body(body): A1111Body<ExtrasRequest>,
) -> Result<Json<Value>, A1111Error> {
    let list = body.image_list.as_deref().unwrap_or_default();
    if list.is_empty() {
        return Err(
            ApiError::invalid("imageList", "imageList: at least one image is required").into(),
        );
    }
    let mut images = Vec::with_capacity(list.len());
    for (index, item) in list.iter().enumerate() {
        images.push(SourceImage {
            bytes: decode(&format!("imageList[{index}].data"), &item.data)?,
            source: item.name.clone(),
        });
    }
    let (out, html_info) = extras(&state, &body, images, "a1111-extras").await?;
    Ok(Json(json!({ "images": out, "html_info": html_info })))
}

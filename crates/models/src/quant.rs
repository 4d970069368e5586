//! The weight types `models convert` writes (ggml's quantizations), with their sizes, so a smaller copy's size can
//! be shown before it is made.

use serde::{Deserialize, Serialize};

/// A weight type sd.cpp's `convert` can write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, specta::Type)]
pub enum QuantType {
    #[serde(rename = "f16")]
    F16,
    #[serde(rename = "q8_0")]
    Q8_0,
    #[serde(rename = "q6_k")]
    Q6K,
    #[serde(rename = "q5_k")]
    Q5K,
    #[serde(rename = "q5_1")]
    Q5_1,
    #[serde(rename = "q5_0")]
    Q5_0,
    #[serde(rename = "q4_k")]
    Q4K,
    #[serde(rename = "q4_1")]
    Q4_1,
    #[serde(rename = "q4_0")]
    Q4_0,
    #[serde(rename = "q3_k")]
    Q3K,
    #[serde(rename = "q2_k")]
    Q2K,
}

impl QuantType {
    pub const ALL: [QuantType; 11] = [
        QuantType::F16,
        QuantType::Q8_0,
        QuantType::Q6K,
        QuantType::Q5K,
        QuantType::Q5_1,
        QuantType::Q5_0,
        QuantType::Q4K,
        QuantType::Q4_1,
        QuantType::Q4_0,
        QuantType::Q3K,
        QuantType::Q2K,
    ];

    /// ggml's name (`q8_0`, `q4_k`, ...).
    pub fn name(self) -> &'static str {
        match self {
            QuantType::F16 => "f16",
            QuantType::Q8_0 => "q8_0",
            QuantType::Q6K => "q6_k",
            QuantType::Q5K => "q5_k",
            QuantType::Q5_1 => "q5_1",
            QuantType::Q5_0 => "q5_0",
            QuantType::Q4K => "q4_k",
            QuantType::Q4_1 => "q4_1",
            QuantType::Q4_0 => "q4_0",
            QuantType::Q3K => "q3_k",
            QuantType::Q2K => "q2_k",
        }
    }

    /// Bytes per weight of the quantized matrices.
    pub fn bytes_per_weight(self) -> f64 {
        crate::plan::bytes_per_weight(self.name())
    }
}

impl std::fmt::Display for QuantType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for QuantType {
    type Err = String;
    fn from_str(s: &str) -> Result<QuantType, String> {
        let wanted = s.trim().to_ascii_lowercase();
        QuantType::ALL
            .into_iter()
            .find(|t| t.name() == wanted)
            .ok_or_else(|| {
                let names: Vec<&str> = QuantType::ALL.iter().map(|t| t.name()).collect();
                format!("'{s}' is not a weight type; allowed: {}", names.join(", "))
            })
    }
}

impl QuantType {
    /// Elements per quantization block (1 for f16).
    pub fn block(self) -> u64 {
        match self {
            QuantType::F16 => 1,
            QuantType::Q6K | QuantType::Q5K | QuantType::Q4K | QuantType::Q3K | QuantType::Q2K => {
                256
            }
            _ => 32,
        }
    }
}

/// Whether sd.cpp's convert changes a tensor's type (`ModelLoader::tensor_should_be_converted`): rows must fill
/// whole blocks, and biases, scales, embeddings and the embedders/final layers stay as they are.
pub fn converts(tensor: &crate::header::Tensor, to: QuantType) -> bool {
    let name = tensor.name.as_str();
    let row = tensor.shape.last().copied().unwrap_or(0);
    let kept = [
        "img_in.",
        "txt_in.",
        "time_in.",
        "vector_in.",
        "guidance_in.",
        "final_layer.",
        "x_embedder.",
        "t_embedder.",
        "y_embedder.",
        "pos_embed",
        "context_embedder.",
        "time_embed.",
        "label_emb.",
        "embedding",
    ];
    row % to.block() == 0
        && !name.ends_with(".bias")
        && !name.ends_with(".scale")
        && !name.ends_with(".weight_scale")
        && !kept.iter().any(|k| name.contains(k))
}

/// The size of a file's copy at `to`, tensor by tensor as sd.cpp's convert writes it.
pub fn converted_bytes(tensors: &[crate::header::Tensor], to: QuantType) -> f64 {
    tensors
        .iter()
        .map(|t| {
            let elements = t.elements() as f64;
            if converts(t, to) {
                elements * to.bytes_per_weight()
            } else {
                elements * crate::plan::bytes_per_weight(&t.dtype)
            }
        })
        .sum()
}

/// A rough size of a copy of a file holding `parameters` weights at `to`, when its header cannot be read
/// tensor by tensor: the weights at the new type plus 2 % for what keeps its type.
pub fn converted_size(parameters: f64, to: QuantType) -> f64 {
    parameters * to.bytes_per_weight() * 1.02
}

//! The PNG files DiffuGen writes and reads back. Below both the engine (which writes a finished image with its
//! parameters) and the gallery (which reads them back into rows), so neither depends on the other for it.

use std::fs;
use std::io;
use std::path::Path;

/// The folder beside a gallery's images where the init images and masks they were rendered from are kept.
pub const INPUTS_FOLDER: &str = "inputs";

/// A text chunk to write.
#[derive(Debug, Clone, Copy)]
pub enum Text<'a> {
    /// `tEXt` when the text is ASCII (what every reader reads), `iTXt` otherwise (any UTF-8).
    Plain { key: &'a str, text: &'a str },
    /// Always `iTXt` (UTF-8).
    Utf8 { key: &'a str, text: &'a str },
}

/// Pixels to encode: 1 channel (grey) or 3 (RGB), 8 bits each, row by row.
#[derive(Debug, Clone, Copy)]
pub struct Pixels<'a> {
    pub width: u32,
    pub height: u32,
    pub channels: u32,
    pub data: &'a [u8],
}

/// Encodes `pixels` as PNG with `texts` before the image data.
pub fn encode(pixels: Pixels<'_>, texts: &[Text<'_>]) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut bytes, pixels.width, pixels.height);
        encoder.set_color(if pixels.channels == 1 {
            png::ColorType::Grayscale
        } else {
            png::ColorType::Rgb
        });
        encoder.set_depth(png::BitDepth::Eight);
        for text in texts {
            match *text {
                Text::Plain { key, text } if text.is_ascii() => {
                    encoder.add_text_chunk(key.into(), text.into())
                }
                Text::Plain { key, text } | Text::Utf8 { key, text } => {
                    encoder.add_itxt_chunk(key.into(), text.into())
                }
            }
            .map_err(io::Error::other)?;
        }
        let mut writer = encoder.write_header().map_err(io::Error::other)?;
        writer
            .write_image_data(pixels.data)
            .map_err(io::Error::other)?;
        writer.finish().map_err(io::Error::other)?;
    }
    Ok(bytes)
}

/// Reads every text chunk (tEXt, zTXt, iTXt) of a PNG file.
pub fn read(path: &Path) -> io::Result<Vec<(String, String)>> {
    read_from(io::BufReader::new(fs::File::open(path)?))
}

/// Reads every text chunk of a PNG held in memory (an image a client sent).
pub fn read_bytes(bytes: &[u8]) -> io::Result<Vec<(String, String)>> {
    read_from(io::Cursor::new(bytes))
}

fn read_from(source: impl io::Read) -> io::Result<Vec<(String, String)>> {
    let decoder = png::Decoder::new(source);
    let reader = decoder.read_info().map_err(io::Error::other)?;
    let info = reader.info();
    let mut out: Vec<(String, String)> = info
        .uncompressed_latin1_text
        .iter()
        .map(|t| (t.keyword.clone(), t.text.clone()))
        .collect();
    for chunk in &info.compressed_latin1_text {
        if let Ok(text) = chunk.get_text() {
            out.push((chunk.keyword.clone(), text));
        }
    }
    for chunk in &info.utf8_text {
        if let Ok(text) = chunk.get_text() {
            out.push((chunk.keyword.clone(), text));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_written_are_read_back_whatever_their_script() {
        let dir = std::env::temp_dir().join(format!("pngtext-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.png");
        let data = [0u8, 128, 255, 7];
        let bytes = encode(
            Pixels {
                width: 2,
                height: 2,
                channels: 1,
                data: &data,
            },
            &[
                Text::Plain {
                    key: "parameters",
                    text: "a fox",
                },
                Text::Plain {
                    key: "parameters2",
                    text: "ein Fuchs im Schnee, 狐",
                },
                Text::Utf8 {
                    key: "record",
                    text: "{}",
                },
            ],
        )
        .unwrap();
        fs::write(&path, bytes).unwrap();
        let mut texts = read(&path).unwrap();
        texts.sort();
        assert_eq!(
            texts,
            [
                ("parameters".to_string(), "a fox".to_string()),
                ("parameters2".into(), "ein Fuchs im Schnee, 狐".into()),
                ("record".into(), "{}".into()),
            ]
        );
        fs::remove_dir_all(dir).unwrap();
    }
}

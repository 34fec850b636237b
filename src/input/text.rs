//! Reading one file as text, by extension: plain text, HTML or PDF.

use std::path::Path;

use super::{html, pdf};

/// How much of a file is looked at to decide that it is binary.
const BINARY_SNIFF_BYTES: usize = 8 * 1024;

/// How a file's text is obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextKind {
    /// `.txt .text .md .markdown .rst .csv`: the bytes are the text.
    Plain,
    /// `.html .htm`: tags stripped, `<script>`/`<style>` dropped, entities decoded.
    Html,
    /// `.pdf`: the text layer.
    Pdf,
}

impl TextKind {
    /// The kind for a path, or `None` when its extension is not a document format.
    pub fn of(path: &Path) -> Option<Self> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "txt" | "md" | "markdown" | "rst" | "csv" | "text" => Some(Self::Plain),
            "html" | "htm" => Some(Self::Html),
            "pdf" => Some(Self::Pdf),
            _ => None,
        }
    }
}

impl TextKind {
    /// The name the extraction child is told (`extract-text --kind`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Plain => "plain",
            Self::Html => "html",
            Self::Pdf => "pdf",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Plain, Self::Html, Self::Pdf]
            .into_iter()
            .find(|k| k.name() == name)
    }
}

/// The text of a file, read in this process with no bound of its own (see
/// [`super::Extractor`] for the bounded way); errors are messages naming the file.
///
/// An empty or whitespace-only text is `Ok`: the pipeline turns it into its own error record.
pub fn extract_in_process(path: &Path, kind: TextKind) -> Result<String, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    match kind {
        TextKind::Plain => decode_text(path, &bytes),
        TextKind::Html => {
            reject_binary(path, &bytes)?;
            Ok(html::html_to_text(&bytes))
        }
        TextKind::Pdf => pdf::pdf_to_text(&bytes)
            .map_err(|e| format!("{}: cannot extract text: {e}", path.display())),
    }
}

/// Text from the bytes of a plain-text file.
///
/// Invalid UTF-8 is decoded lossily (each bad sequence becomes U+FFFD) and the document is
/// kept: a Latin-1 or Windows-1252 file is still mostly readable for a model, and dropping it
/// would lose a whole document for a few accented letters. A file starting with a UTF-16 byte
/// order mark is decoded as UTF-16; a UTF-8 byte order mark is dropped. Anything else with NUL
/// bytes in its first 8 KiB is binary and becomes an error.
fn decode_text(path: &Path, bytes: &[u8]) -> Result<String, String> {
    if let Some(text) = decode_utf16_with_bom(bytes) {
        return Ok(text);
    }
    reject_binary(path, bytes)?;
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let text = String::from_utf8_lossy(bytes);
    if let std::borrow::Cow::Owned(_) = text {
        tracing::warn!(
            "{}: not valid UTF-8 (Latin-1?); invalid bytes read as U+FFFD",
            path.display()
        );
    }
    Ok(text.into_owned())
}

fn reject_binary(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let head = &bytes[..bytes.len().min(BINARY_SNIFF_BYTES)];
    if head.contains(&0) {
        return Err(format!("{}: looks binary (NUL bytes)", path.display()));
    }
    Ok(())
}

/// UTF-16 text announced by its byte order mark (what Windows tools often write), lossily.
fn decode_utf16_with_bom(bytes: &[u8]) -> Option<String> {
    let (body, little_endian) = match bytes {
        [0xFF, 0xFE, rest @ ..] => (rest, true),
        [0xFE, 0xFF, rest @ ..] => (rest, false),
        _ => return None,
    };
    let units: Vec<u16> = body
        .chunks(2)
        .map(|pair| match *pair {
            [a, b] if little_endian => u16::from_le_bytes([a, b]),
            [a, b] => u16::from_be_bytes([a, b]),
            // An odd trailing byte cannot be a whole code unit.
            _ => char::REPLACEMENT_CHARACTER as u16,
        })
        .collect();
    Some(String::from_utf16_lossy(&units))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(bytes: &[u8]) -> Result<String, String> {
        decode_text(Path::new("f.txt"), bytes)
    }

    #[test]
    fn kinds_follow_the_extension_case_insensitively() {
        assert_eq!(TextKind::of(Path::new("a/b.TXT")), Some(TextKind::Plain));
        assert_eq!(TextKind::of(Path::new("b.markdown")), Some(TextKind::Plain));
        assert_eq!(TextKind::of(Path::new("b.Htm")), Some(TextKind::Html));
        assert_eq!(TextKind::of(Path::new("b.pdf")), Some(TextKind::Pdf));
        assert_eq!(TextKind::of(Path::new("b.exe")), None);
        assert_eq!(TextKind::of(Path::new("README")), None);
    }

    #[test]
    fn invalid_utf8_is_decoded_lossily() {
        assert_eq!(decode(b"caf\xe9 ok"), Ok("caf\u{FFFD} ok".to_string()));
    }

    #[test]
    fn nul_bytes_early_mean_binary() {
        let err = decode(b"abc\0def").unwrap_err();
        assert_eq!(err, "f.txt: looks binary (NUL bytes)");
    }

    #[test]
    fn nul_bytes_after_the_first_8_kib_are_kept() {
        let mut bytes = vec![b'a'; BINARY_SNIFF_BYTES];
        bytes.push(0);
        assert_eq!(decode(&bytes).map(|t| t.len()), Ok(BINARY_SNIFF_BYTES + 1));
    }

    #[test]
    fn byte_order_marks_are_honoured() {
        assert_eq!(decode(b"\xEF\xBB\xBFhi"), Ok("hi".to_string()));
        assert_eq!(decode(b"\xFF\xFEh\0i\0"), Ok("hi".to_string()));
        assert_eq!(decode(b"\xFE\xFF\0h\0i"), Ok("hi".to_string()));
    }

    #[test]
    fn empty_text_is_left_to_the_pipeline() {
        assert_eq!(decode(b""), Ok(String::new()));
        assert_eq!(decode(b" \n\t"), Ok(" \n\t".to_string()));
    }
}

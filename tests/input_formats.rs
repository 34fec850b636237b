//! The input layer end to end through the library API: which documents a folder of mixed
//! formats yields, in which order, with which ids, texts and errors.

use std::cell::Cell;
use std::fs;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use docanalyze::input::{
    count_documents, documents, Document, ExtractLimits, Extractor, InputSpec, JsonlFields,
};

const SAMPLE_DOCS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/sample-data/docs");

const PAGE_HTML: &str = "<!DOCTYPE html><html><head><title>The page</title>\
    <style>body { color: red; } .x::before { content: '<b>'; }</style>\
    <script>var a = 1 < 2; document.write('<p>injected</p>');</script></head>\
    <body><h1>Heading</h1><p>First &amp; <em>only</em>\n   paragraph.</p>\
    <ul><li>one</li><li>two</li></ul></body></html>";

/// Reads every document of `specs`, returning them with the skipped-files count.
fn read_all(specs: Vec<InputSpec>) -> (Vec<Document>, usize) {
    let skipped = Rc::new(Cell::new(0));
    let extractor = Extractor::in_process(ExtractLimits::default());
    let docs = documents(specs, JsonlFields::default(), extractor, skipped.clone()).collect();
    (docs, skipped.get())
}

fn write(root: &Path, rel: &str, bytes: &[u8]) -> PathBuf {
    let path = root.join(rel);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).expect("create folder");
    }
    fs::write(&path, bytes).expect("write file");
    path
}

/// A folder holding one of every case the input layer distinguishes.
fn mixed_folder() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    write(root, "notes/a.txt", b"plain note");
    write(root, "notes/sub/deep.md", b"# Deep\n\nnested");
    write(root, ".secret.txt", b"hidden file");
    write(root, ".cache/inside.txt", b"inside a hidden folder");
    write(root, "image.png", b"\x89PNG\r\n\x1a\n");
    write(root, "page.html", PAGE_HTML.as_bytes());
    fs::copy(
        Path::new(SAMPLE_DOCS).join("fhs-3.0.pdf"),
        root.join("manual.pdf"),
    )
    .expect("copy sample PDF");
    write(root, "broken.pdf", b"%PDF-1.4\nnot really a pdf");
    write(root, "latin1.txt", b"caf\xe9 cr\xe8me");
    write(root, "blob.txt", b"MZ\x90\0\x03\0\0\0");
    write(root, "empty.txt", b"");
    write(
        root,
        "tickets.jsonl",
        b"{\"id\":\"t1\",\"text\":\"first ticket\"}\n\n{\"text\":\"no id\"}\n",
    );
    std::os::unix::fs::symlink("..", root.join("notes/loop")).expect("symlink loop");
    dir
}

#[test]
fn a_mixed_folder_yields_exactly_its_documents_in_sorted_order() {
    let dir = mixed_folder();
    let root = dir.path();
    let (docs, skipped) = read_all(vec![InputSpec::Dir(root.to_path_buf())]);

    let tickets = root.join("tickets.jsonl").display().to_string();
    let ids: Vec<&str> = docs.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "blob.txt",
            "broken.pdf",
            "empty.txt",
            "latin1.txt",
            "manual.pdf",
            "notes/a.txt",
            "notes/sub/deep.md",
            "page.html",
            "t1",
            &format!("{tickets}:3"),
        ]
    );
    // image.png only: the symlink loop is warned about but is no skipped file.
    assert_eq!(skipped, 1);

    let by_id = |id: &str| {
        docs.iter()
            .find(|d| d.id == id)
            .unwrap_or_else(|| panic!("no document {id}"))
    };
    let source = |rel: &str| root.join(rel).display().to_string();

    assert_eq!(
        by_id("blob.txt").text,
        Err(format!("{}: looks binary (NUL bytes)", source("blob.txt")))
    );
    let broken = by_id("broken.pdf").text.as_ref().unwrap_err();
    assert!(
        broken.starts_with(&format!("{}: cannot extract text: ", source("broken.pdf"))),
        "{broken}"
    );
    assert_eq!(by_id("empty.txt").text, Ok(String::new()));
    assert_eq!(
        by_id("latin1.txt").text,
        Ok("caf\u{FFFD} cr\u{FFFD}me".to_string())
    );
    let manual = by_id("manual.pdf").text.as_ref().expect("PDF text");
    assert!(manual.contains("Filesystem Hierarchy Standard"));
    assert!(manual.contains("/usr/bin"));
    assert_eq!(by_id("notes/a.txt").text, Ok("plain note".to_string()));
    assert_eq!(
        by_id("notes/sub/deep.md").source,
        source("notes/sub/deep.md")
    );
    assert_eq!(
        by_id("page.html").text,
        Ok("The page\n\nHeading\n\nFirst & only paragraph.\n\n- one\n- two".to_string())
    );
    assert_eq!(by_id("t1").text, Ok("first ticket".to_string()));
    assert_eq!(by_id("t1").source, format!("{tickets}:1"));
    assert_eq!(docs[9].text, Ok("no id".to_string()));
}

#[test]
fn the_count_matches_the_documents() {
    let dir = mixed_folder();
    let root = dir.path();
    let specs = vec![
        InputSpec::Dir(root.to_path_buf()),
        InputSpec::Jsonl(root.join("tickets.jsonl")),
        InputSpec::File(root.join("page.html")),
        InputSpec::File(root.join("image.png")),
    ];
    let counted = count_documents(&specs);
    let (docs, skipped) = read_all(specs);
    assert_eq!(counted, Some(docs.len()));
    assert_eq!(docs.len(), 10 + 2 + 1);
    // image.png once inside the folder, once given by name.
    assert_eq!(skipped, 2);
}

#[test]
fn stdin_makes_the_count_unknown() {
    assert_eq!(count_documents(&[InputSpec::Stdin]), None);
}

#[test]
fn a_file_given_by_name_keeps_its_path_as_id() {
    let dir = mixed_folder();
    let path = dir.path().join("notes/a.txt");
    let (docs, skipped) = read_all(vec![InputSpec::File(path.clone())]);
    assert_eq!(skipped, 0);
    assert_eq!(
        docs,
        [Document {
            id: path.display().to_string(),
            source: path.display().to_string(),
            text: Ok("plain note".to_string()),
            gold: None,
        }]
    );
}

#[test]
fn python_docs_html_becomes_text_without_markup_css_or_js() {
    let mut pages: Vec<PathBuf> = fs::read_dir(SAMPLE_DOCS)
        .expect("sample-data/docs")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("python-docs-") && n.ends_with(".html"))
        })
        .collect();
    pages.sort();
    assert_eq!(pages.len(), 4);

    let (docs, skipped) = read_all(pages.into_iter().map(InputSpec::File).collect());
    assert_eq!(skipped, 0);
    assert_eq!(docs.len(), 4);
    for doc in &docs {
        let text = doc.text.as_ref().expect("HTML text");
        assert!(
            text.contains("Python 3.11.2 documentation"),
            "{}: no title",
            doc.id
        );
        assert!(text.len() > 1000, "{}: too little text", doc.id);
        assert!(text.contains("\n\n"), "{}: no paragraph breaks", doc.id);
        let tag = text
            .as_bytes()
            .windows(2)
            .position(|w| w[0] == b'<' && (w[1].is_ascii_alphabetic() || b"/!".contains(&w[1])));
        assert_eq!(tag, None, "{}: markup left in the text", doc.id);
        for css_or_js in [
            "@media",
            "full-width-table",
            "{",
            "}",
            "jquery",
            "&amp;",
            "&lt;",
        ] {
            assert!(
                !text.contains(css_or_js),
                "{}: `{css_or_js}` in the text",
                doc.id
            );
        }
        assert!(
            text.lines().all(|l| l == l.trim_end()),
            "{}: trailing blanks",
            doc.id
        );
    }
}

//! HTML to plain text: tags stripped, scripts and styles dropped, entities decoded, blocks
//! kept apart by line and paragraph breaks.
//!
//! html5gum only tokenizes (WHATWG-exact, entities included); no tree is built, because the
//! text needs just the order of tags and strings: a counter for the elements whose content
//! is dropped, one for `<pre>`, and the break each block element asks for.

use html5gum::emitters::callback::{CallbackEmitter, CallbackEvent};
use html5gum::{Span, Tokenizer};

/// The text of an HTML document. Bytes that are not UTF-8 become U+FFFD.
pub fn html_to_text(html: &[u8]) -> String {
    let mut text = TextWriter::default();
    let mut emitter = CallbackEmitter::new(|event: CallbackEvent<'_>, _: Span<()>| {
        text.event(event);
        None::<std::convert::Infallible>
    });
    // Lets the tokenizer read <script>, <style>, <title>, … contents as raw text, as a browser
    // does, instead of as markup.
    emitter.naively_switch_states(true);
    // Reading from a byte slice cannot fail, and the callback yields no tokens: draining the
    // iterator just runs the tokenizer to the end.
    Tokenizer::new_with_emitter(html, emitter).for_each(drop);
    text.finish()
}

/// What separates the next text from the text before it. Ordered: the stronger break wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
enum Break {
    #[default]
    None,
    Space,
    Line,
    Paragraph,
}

/// What an element means for the text.
enum Role {
    /// Its content is not text for a reader (`<script>`, `<style>`, …).
    Dropped,
    /// Its whitespace is content.
    Preformatted,
    /// Starts and ends with this break.
    Block(Break),
    /// A list: its items are numbered (`<ol>`) or bulleted.
    List {
        ordered: bool,
    },
    ListItem,
    LineBreak,
    Inline,
}

fn role(tag: &[u8]) -> Role {
    match tag {
        b"script" | b"style" | b"noscript" | b"template" | b"iframe" | b"svg" => Role::Dropped,
        b"pre" | b"listing" | b"textarea" => Role::Preformatted,
        b"ul" | b"menu" => Role::List { ordered: false },
        b"ol" => Role::List { ordered: true },
        b"li" => Role::ListItem,
        b"br" => Role::LineBreak,
        b"p" | b"h1" | b"h2" | b"h3" | b"h4" | b"h5" | b"h6" | b"title" | b"body" | b"dl"
        | b"table" | b"blockquote" | b"section" | b"article" | b"header" | b"footer" | b"nav"
        | b"aside" | b"main" | b"figure" | b"form" | b"fieldset" | b"address" | b"details"
        | b"hr" | b"hgroup" => Role::Block(Break::Paragraph),
        b"div" | b"tr" | b"dt" | b"dd" | b"caption" | b"figcaption" | b"summary" | b"legend"
        | b"option" => Role::Block(Break::Line),
        b"td" | b"th" => Role::Block(Break::Space),
        _ => Role::Inline,
    }
}

/// Accumulates the text as tokens arrive.
#[derive(Default)]
struct TextWriter {
    out: String,
    pending: Break,
    /// Open elements whose content is dropped.
    dropped: usize,
    /// Open preformatted elements.
    preformatted: usize,
    /// A `<pre>` just opened: a newline right after it is not content (as in browsers).
    pre_start: bool,
    /// Open lists, innermost last: `Some(n)` for an ordered list at item `n`.
    lists: Vec<Option<usize>>,
    /// The marker of a list item, written before its first text (an item without text,
    /// such as an icon, leaves no bare `-`).
    marker: Option<String>,
}

impl TextWriter {
    fn event(&mut self, event: CallbackEvent<'_>) {
        match event {
            CallbackEvent::OpenStartTag { name } => self.start_tag(name),
            CallbackEvent::EndTag { name } => self.end_tag(name),
            CallbackEvent::String { value } if self.dropped == 0 => {
                self.text(&String::from_utf8_lossy(value));
            }
            _ => {}
        }
    }

    fn start_tag(&mut self, name: &[u8]) {
        match role(name) {
            Role::Dropped => self.dropped += 1,
            Role::Preformatted => {
                self.preformatted += 1;
                self.pre_start = true;
                self.brk(Break::Paragraph);
            }
            Role::Block(b) => self.brk(b),
            Role::List { ordered } => {
                self.brk(self.list_break());
                self.lists.push(ordered.then_some(0));
            }
            Role::ListItem => {
                self.brk(Break::Line);
                let indent = "  ".repeat(self.lists.len().saturating_sub(1));
                self.marker = Some(match self.lists.last_mut() {
                    Some(Some(n)) => {
                        *n += 1;
                        format!("{indent}{n}. ")
                    }
                    _ => format!("{indent}- "),
                });
            }
            Role::LineBreak => self.line_break(),
            Role::Inline => {}
        }
    }

    fn end_tag(&mut self, name: &[u8]) {
        match role(name) {
            Role::Dropped => self.dropped = self.dropped.saturating_sub(1),
            Role::Preformatted => {
                self.preformatted = self.preformatted.saturating_sub(1);
                self.brk(Break::Paragraph);
            }
            Role::Block(b) => self.brk(b),
            Role::List { .. } => {
                self.lists.pop();
                self.brk(self.list_break());
            }
            Role::ListItem => self.brk(Break::Line),
            // `</br>` is read as `<br>` by browsers.
            Role::LineBreak => self.line_break(),
            Role::Inline => {}
        }
    }

    /// A list stands apart as a paragraph; a list nested in an item just starts a new line.
    fn list_break(&self) -> Break {
        if self.lists.is_empty() {
            Break::Paragraph
        } else {
            Break::Line
        }
    }

    fn brk(&mut self, b: Break) {
        self.pending = self.pending.max(b);
    }

    /// `<br>`: unlike block breaks, several in a row are kept, up to a paragraph break.
    fn line_break(&mut self) {
        self.pending = match self.pending {
            Break::None | Break::Space => Break::Line,
            _ => Break::Paragraph,
        };
    }

    fn text(&mut self, s: &str) {
        if self.preformatted > 0 {
            let mut s = s.replace("\r\n", "\n");
            if std::mem::take(&mut self.pre_start) && s.starts_with('\n') {
                s.remove(0);
            }
            if !s.is_empty() {
                self.flush_break();
                self.out.push_str(&s);
            }
            return;
        }
        for c in s.chars() {
            // `char::is_whitespace` includes U+00A0, so `&nbsp;` runs collapse like spaces.
            if c.is_whitespace() {
                self.brk(Break::Space);
            } else {
                self.flush_break();
                self.out.push(c);
            }
        }
    }

    /// Writes the pending break (nothing at the start of the document), then the pending list
    /// marker, before new text.
    fn flush_break(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        self.write_break(pending);
        if let Some(marker) = self.marker.take() {
            self.out.push_str(&marker);
        }
    }

    fn write_break(&mut self, pending: Break) {
        if self.out.is_empty() {
            return;
        }
        match pending {
            Break::None => {}
            Break::Space => {
                if !self.out.ends_with(char::is_whitespace) {
                    self.out.push(' ');
                }
            }
            Break::Line | Break::Paragraph => {
                self.trim_end();
                self.out
                    .push_str(if pending == Break::Line { "\n" } else { "\n\n" });
            }
        }
    }

    fn trim_end(&mut self) {
        let kept = self.out.trim_end().len();
        self.out.truncate(kept);
    }

    fn finish(mut self) -> String {
        self.trim_end();
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(html: &str) -> String {
        html_to_text(html.as_bytes())
    }

    #[test]
    fn tags_are_stripped_and_inline_text_joined() {
        assert_eq!(
            text("<p>Hello <b>bold</b>\n   world</p>"),
            "Hello bold world"
        );
    }

    #[test]
    fn scripts_styles_and_comments_are_dropped() {
        let html = "<html><head><title>T</title><style>p { color: red }</style>\
                    <script>if (a < b) { x(\"</p>\"); }</script></head>\
                    <body><!-- note --><p>Body</p><noscript><p>enable js</p></noscript></body></html>";
        assert_eq!(text(html), "T\n\nBody");
    }

    #[test]
    fn entities_are_decoded() {
        assert_eq!(
            text("<p>a &lt;b&gt; &amp; &quot;c&quot; &#233;&eacute; d&nbsp;&nbsp;e</p>"),
            "a <b> & \"c\" éé d e"
        );
    }

    #[test]
    fn blocks_keep_paragraph_and_line_breaks() {
        let html = "<h1>Title</h1><p>One\ntwo</p><p>Three<br>four</p><div>five</div><div>six</div>";
        assert_eq!(text(html), "Title\n\nOne two\n\nThree\nfour\n\nfive\nsix");
    }

    #[test]
    fn lists_get_markers() {
        let html = "<ul><li>a</li><li><img src=x></li><li>b</li></ul><ol><li>x<li>y</ol>";
        assert_eq!(text(html), "- a\n- b\n\n1. x\n2. y");
    }

    #[test]
    fn nested_lists_are_indented() {
        let html = "<p>p</p><ul><li>a<ul><li>a1</li><li>a2</li></ul></li><li>b</li></ul><p>q</p>";
        assert_eq!(text(html), "p\n\n- a\n  - a1\n  - a2\n- b\n\nq");
    }

    #[test]
    fn preformatted_text_keeps_its_whitespace() {
        let html = "<p>Code:</p><pre>\nfn main() {\n    x  =  1;\n}\n</pre><p>after</p>";
        assert_eq!(text(html), "Code:\n\nfn main() {\n    x  =  1;\n}\n\nafter");
    }

    #[test]
    fn table_cells_are_separated() {
        let html = "<table><tr><td>a</td><td>b</td></tr><tr><th>c</th><th>d</th></tr></table>";
        assert_eq!(text(html), "a b\nc d");
    }

    #[test]
    fn broken_markup_and_bad_bytes_do_not_fail() {
        assert_eq!(
            html_to_text(b"<p>caf\xe9 <b>open <i>never closed"),
            "caf\u{FFFD} open never closed"
        );
        assert_eq!(text("<<<>>></p></div>"), "<<<>>>");
        assert_eq!(text(""), "");
    }
}

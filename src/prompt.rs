//! Prompts: a task template (`prompts/*.j2` or a file) rendered with the document, wrapped in
//! the model's chat template, tokenized and cut to fit the context.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use minijinja::{context, Environment, Error as JinjaError, ErrorKind, Template, Value};
use serde::Serialize;

use crate::control_tokens::ControlTokens;
use crate::json_answers::{fields_schema, JsonConstraint};
use crate::labels::LabelSet;
use crate::tokenizer::{Tokenizer, TokenizerError};

/// The task templates shipped in `prompts/`, embedded in the binary.
pub const BUILTIN_PROMPTS: &[(&str, &str)] = &[
    ("summarize", include_str!("../prompts/summarize.j2")),
    ("classify", include_str!("../prompts/classify.j2")),
    ("extract", include_str!("../prompts/extract.j2")),
    ("sentiment", include_str!("../prompts/sentiment.j2")),
    ("keywords", include_str!("../prompts/keywords.j2")),
];

/// A document longer than this many bytes per context position is cut to that length before it
/// is tokenized: no tokenizer packs 16 bytes into a token on average, so the cut never drops text
/// that would have fit, and a multi-megabyte document costs no more than a short one.
pub const MAX_BYTES_PER_TOKEN: usize = 16;

/// Template instructions one render may execute (minijinja's fuel). Real chat templates take a
/// few thousand for a conversation; a template that loops for minutes runs out in well under a
/// second.
pub const TEMPLATE_FUEL: u64 = 2_000_000;

/// A render may write this many bytes besides [`OUTPUT_BYTES_PER_INPUT_BYTE`] per byte of the
/// values it was given.
pub const TEMPLATE_OUTPUT_BASE_BYTES: usize = 1 << 20;
pub const OUTPUT_BYTES_PER_INPUT_BYTE: usize = 4;

/// What the templates are tried on when a prompt builder is made, so that a template that
/// cannot render (or blows its bounds) stops the run at once instead of failing every document.
const PROBE_ID: &str = "probe.txt";
const PROBE_DOCUMENT: &str = "A short document.\n\nIt has two paragraphs.";

/// Used when a GGUF carries no `tokenizer.chat_template` but its vocabulary has ChatML's
/// control tokens.
const CHATML_TEMPLATE: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// Used when a GGUF carries no chat template and no ChatML tokens (a base model, such as Gemma
/// 3 270M): the messages as plain text, one paragraph each, after the tokenizer's BOS.
const PLAIN_TEMPLATE: &str = "{% for message in messages %}{{ message['content'] }}{{ '\n\n' if not loop.last or add_generation_prompt else '' }}{% endfor %}";

/// The chat template for a model whose file has none, with its name in words: ChatML when
/// its vocabulary knows `<|im_start|>` as a control token, else plain text.
pub fn fallback_chat_template(tokenizer: &Tokenizer) -> (&'static str, &'static str) {
    let chatml = (tokenizer.control_tokens().strings().iter()).any(|s| s == "<|im_start|>");
    if chatml {
        ("ChatML", CHATML_TEMPLATE)
    } else {
        ("plain text after BOS", PLAIN_TEMPLATE)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    #[error("unknown prompt `{0}`: not a built-in ({list}) nor a readable file", list = builtin_names())]
    Unknown(String),
    #[error("prompt template `{name}` is invalid: {message}")]
    Syntax { name: String, message: String },
    #[error("prompt `{name}` failed to render: {message}")]
    Render { name: String, message: String },
    #[error("the chat template (tokenizer.chat_template) cannot be used: {message}")]
    ChatTemplate { message: String },
    #[error("--labels: {0}")]
    Labels(String),
    #[error("{origin}: the JSON schema cannot be used: {message}")]
    Schema { origin: String, message: String },
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error("the prompt of `{name}` needs {needed} tokens but only {available} fit the context ({ctx} positions, {max_tokens} kept for the answer)")]
    TooLong {
        name: String,
        needed: usize,
        available: usize,
        ctx: usize,
        max_tokens: usize,
    },
    #[error("longer than the context: the prompt needs {needed} tokens, {available} fit ({ctx} positions, {max_tokens} kept for the answer){action}", needed = .needed.describe(), action = .overflow.action())]
    Overflow {
        needed: TokenCount,
        available: usize,
        ctx: usize,
        max_tokens: usize,
        overflow: Overflow,
    },
}

/// What to do with a document whose prompt does not fit the context (`--overflow`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Overflow {
    /// Keep the start of the document, as much as fits; the record's status is `truncated`.
    #[default]
    Truncate,
    /// Do not generate; the record's status is `error`, but the run's exit code ignores it.
    Skip,
    /// Do not generate; the record's status is `error` and the exit code is 1.
    Error,
    /// Split the document into chunks that fit, run the prompt on each (parallel sequences),
    /// then merge their answers into one (see [`crate::chunking`]).
    Chunk,
}

impl Overflow {
    fn action(self) -> &'static str {
        match self {
            Overflow::Truncate => "",
            Overflow::Skip => ", skipped (--overflow skip)",
            Overflow::Error | Overflow::Chunk => " (--overflow error)",
        }
    }
}

/// A token count, exact or a lower bound (the document was too long to count in full).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenCount {
    Exactly(usize),
    MoreThan(usize),
}

impl TokenCount {
    fn describe(self) -> String {
        match self {
            TokenCount::Exactly(n) => n.to_string(),
            TokenCount::MoreThan(n) => format!("more than {n}"),
        }
    }
}

fn builtin_names() -> String {
    BUILTIN_PROMPTS
        .iter()
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A named task template.
#[derive(Debug, Clone)]
pub struct PromptTemplate {
    pub name: String,
    source: String,
}

impl PromptTemplate {
    /// A built-in name (`summarize`) or the path of a template file.
    pub fn resolve(name_or_path: &str) -> Result<Self, PromptError> {
        if let Some((name, source)) = BUILTIN_PROMPTS.iter().find(|(n, _)| *n == name_or_path) {
            return Ok(Self {
                name: (*name).to_string(),
                source: (*source).to_string(),
            });
        }
        let path = Path::new(name_or_path);
        match std::fs::read_to_string(path) {
            Ok(source) => Ok(Self {
                name: name_or_path.to_string(),
                source,
            }),
            Err(_) => Err(PromptError::Unknown(name_or_path.to_string())),
        }
    }

    pub fn from_source(name: &str, source: &str) -> Self {
        Self {
            name: name.to_string(),
            source: source.to_string(),
        }
    }

    /// Whether the answer is one of `--labels`: the built-in `classify` and `sentiment`, and
    /// template files that use `labels`.
    pub fn answers_with_a_label(&self) -> bool {
        matches!(self.name.as_str(), "classify" | "sentiment") || self.source.contains("labels")
    }

    /// Whether the answer is JSON: the built-in `extract` and `keywords`, and template files
    /// that use `fields` or `schema` (when there is a schema).
    pub fn answers_with_json(&self) -> bool {
        matches!(self.name.as_str(), "extract" | "keywords")
            || self.source.contains("fields")
            || self.source.contains("schema")
    }

    /// The schema used when neither `--schema` nor `--fields` gives one.
    pub fn default_schema(&self) -> Option<serde_json::Value> {
        (self.name == "keywords").then(
            || serde_json::json!({"type": "array", "items": {"type": "string"}, "maxItems": 10}),
        )
    }

    /// The labels used when `--labels` is not given.
    pub fn default_labels(&self) -> &'static [&'static str] {
        match self.name.as_str() {
            "sentiment" => &["positive", "negative", "neutral"],
            _ => &[],
        }
    }
}

/// Values a task template can use besides the document.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PromptVars {
    pub labels: Vec<String>,
    pub fields: Vec<String>,
    /// The JSON schema answers must follow (`--schema`, or made from `--fields`).
    #[serde(skip)]
    pub schema: Option<serde_json::Value>,
    /// Where the schema came from, for messages (`--schema FILE`).
    #[serde(skip)]
    pub schema_source: String,
}

#[derive(Serialize)]
struct Message<'a> {
    role: &'a str,
    content: &'a str,
}

/// The prompt of one job, ready for the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltPrompt {
    pub tokens: Vec<u32>,
    /// The document was cut to fit the context.
    pub truncated: bool,
}

/// Renders task template + chat template and tokenizes, cutting the document to fit.
pub struct PromptBuilder {
    env: Environment<'static>,
    name: String,
    /// The system message, labels and fields, escaped once (see [`crate::control_tokens`]).
    system: Option<String>,
    labels_text: Vec<String>,
    fields_text: Vec<String>,
    bos_token: String,
    eos_token: String,
    controls: Arc<ControlTokens>,
    labels: Option<Arc<LabelSet>>,
    json: Option<Arc<JsonConstraint>>,
    /// The task template says which part of a chunked document it is given (`part`, `parts`);
    /// when it does not, the document itself is headed with it.
    mentions_parts: bool,
}

/// Where a prompt's document stands in a chunked document; for a reduce prompt, the task its
/// inputs answered.
#[derive(Debug, Clone, Copy)]
pub struct PartInfo<'a> {
    /// 1-based.
    pub part: usize,
    pub parts: usize,
    /// The task template's instruction (escaped), for the reduce template.
    pub task: &'a str,
}

impl PartInfo<'_> {
    /// A document read whole.
    pub const WHOLE: PartInfo<'static> = PartInfo {
        part: 1,
        parts: 1,
        task: "",
    };
}

/// The reduce template of `--overflow chunk` when `--reduce-prompt` is not given.
pub const REDUCE_PROMPT: &str = include_str!("../prompts/reduce.j2");

impl PromptBuilder {
    pub fn new(
        template: &PromptTemplate,
        chat_template: Option<&str>,
        system: Option<String>,
        vars: PromptVars,
        tokenizer: &Tokenizer,
    ) -> Result<Self, PromptError> {
        let mut env = Environment::new();
        env.set_fuel(Some(TEMPLATE_FUEL));
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> Result<String, JinjaError> {
                Err(JinjaError::new(ErrorKind::InvalidOperation, msg))
            },
        );
        let syntax = |name: &str, e: JinjaError| PromptError::Syntax {
            name: name.to_string(),
            message: format!("{e:#}"),
        };
        env.add_template_owned("task", template.source.clone())
            .map_err(|e| syntax(&template.name, e))?;
        let chat_template = chat_template.unwrap_or_else(|| fallback_chat_template(tokenizer).1);
        env.add_template_owned("chat", chat_template.to_string())
            .map_err(|e| syntax("tokenizer.chat_template", e))?;
        let mut vars = vars;
        if vars.labels.is_empty() {
            vars.labels = template
                .default_labels()
                .iter()
                .map(|l| l.to_string())
                .collect();
        }
        let labels = if template.answers_with_a_label() && !vars.labels.is_empty() {
            let set = LabelSet::new(&vars.labels, tokenizer).map_err(PromptError::Labels)?;
            Some(Arc::new(set))
        } else {
            None
        };
        let schema = vars
            .schema
            .clone()
            .or_else(|| (!vars.fields.is_empty()).then(|| fields_schema(&vars.fields)))
            .or_else(|| template.default_schema());
        let json = match schema {
            Some(schema) if template.answers_with_json() && labels.is_none() => Some(Arc::new(
                JsonConstraint::new(&schema, tokenizer).map_err(|message| PromptError::Schema {
                    origin: if vars.schema_source.is_empty() {
                        format!("prompt `{}`", template.name)
                    } else {
                        vars.schema_source.clone()
                    },
                    message,
                })?,
            )),
            _ => None,
        };
        let controls = tokenizer.control_tokens();
        let escape = |v: &[String]| -> Vec<String> {
            v.iter().map(|s| controls.escape(s).into_owned()).collect()
        };
        let builder = Self {
            env,
            name: template.name.clone(),
            system: system.map(|s| controls.escape(&s).into_owned()),
            labels_text: escape(&vars.labels),
            fields_text: escape(&vars.fields),
            labels,
            json,
            bos_token: tokenizer.bos_token().unwrap_or_default().to_string(),
            eos_token: tokenizer.eos_token().unwrap_or_default().to_string(),
            controls,
            mentions_parts: template.source.contains("parts"),
        };
        builder.probe()?;
        Ok(builder)
    }

    /// Renders both templates once on a short document: a template that fails, loops or
    /// floods its output is refused here, once, instead of in every document's record.
    fn probe(&self) -> Result<(), PromptError> {
        let user = self.render_task(PROBE_ID, PROBE_DOCUMENT, PartInfo::WHOLE)?;
        self.render_task(
            PROBE_ID,
            PROBE_DOCUMENT,
            PartInfo {
                part: 2,
                parts: 3,
                task: PROBE_DOCUMENT,
            },
        )?;
        self.render_chat(&user).map_err(|e| match e {
            PromptError::Render { message, .. } => PromptError::ChatTemplate { message },
            other => other,
        })?;
        Ok(())
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The schema this prompt's answers follow, if it answers with JSON.
    pub fn json(&self) -> Option<&Arc<JsonConstraint>> {
        self.json.as_ref()
    }

    /// The labels this prompt answers with, if it answers with a label.
    pub fn labels(&self) -> Option<&Arc<LabelSet>> {
        self.labels.as_ref()
    }

    /// The full prompt text for `document`, as it reads.
    pub fn render(&self, id: &str, document: &str) -> Result<String, PromptError> {
        Ok(self
            .controls
            .unescape(&self.render_escaped(id, document, PartInfo::WHOLE)?)
            .into_owned())
    }

    /// Token ids of the prompt for `document`: control tokens only where the templates wrote
    /// them, the document, id, labels, fields and system message read as text.
    pub fn tokens(
        &self,
        tokenizer: &Tokenizer,
        id: &str,
        document: &str,
    ) -> Result<Vec<u32>, PromptError> {
        self.tokens_of_part(tokenizer, id, document, PartInfo::WHOLE)
    }

    /// [`PromptBuilder::tokens`] for one part of a chunked document (or a reduce prompt).
    pub fn tokens_of_part(
        &self,
        tokenizer: &Tokenizer,
        id: &str,
        document: &str,
        part: PartInfo<'_>,
    ) -> Result<Vec<u32>, PromptError> {
        Ok(tokenizer.encode_prompt(&self.render_escaped(id, document, part)?)?)
    }

    /// The task template's instruction with no document (escaped): what a reduce prompt
    /// says its inputs answered.
    pub fn task_text(&self, id: &str) -> Result<String, PromptError> {
        Ok(self
            .render_task(id, "", PartInfo::WHOLE)?
            .trim()
            .to_string())
    }

    /// The tokens every prompt of this template starts with, whatever the document and id:
    /// the common start of two unlike documents' prompts, less its last token (see
    /// [`crate::engine::shared_prefix`]). The engine checks each job's ids against it.
    pub fn shared_prefix(&self, tokenizer: &Tokenizer) -> Result<Vec<u32>, PromptError> {
        let a = self.tokens(tokenizer, "a.txt", "Alpha: one short document.")?;
        let b = self.tokens(tokenizer, "zz-9", "9 other words, and \"quotes\".")?;
        Ok(crate::engine::shared_prefix(&[a, b]))
    }

    /// The prompt text with every value from the data escaped (see [`crate::control_tokens`]).
    fn render_escaped(
        &self,
        id: &str,
        document: &str,
        part: PartInfo<'_>,
    ) -> Result<String, PromptError> {
        let user = self.render_task(id, document, part)?;
        self.render_chat(&user)
    }

    /// The task template's text (the user message), values escaped; `part.task` is escaped
    /// already.
    fn render_task(
        &self,
        id: &str,
        document: &str,
        part: PartInfo<'_>,
    ) -> Result<String, PromptError> {
        let (labels, fields) = (&self.labels_text, &self.fields_text);
        let document = self.controls.escape(document);
        let document = if part.parts > 1 && !self.mentions_parts {
            std::borrow::Cow::Owned(format!(
                "(Part {} of {} of a longer document.)\n\n{document}",
                part.part, part.parts
            ))
        } else {
            document
        };
        let input_bytes = document.len()
            + id.len()
            + part.task.len()
            + labels.iter().chain(fields).map(String::len).sum::<usize>();
        let template = self
            .env
            .get_template("task")
            .map_err(|e| self.render_err(e))?;
        render_bounded(
            &template,
            context! {
                document => document,
                id => self.controls.escape(id),
                labels => labels,
                fields => fields,
                part => part.part,
                parts => part.parts,
                task => part.task,
            },
            input_bytes,
        )
        .map_err(|e| self.render_err(e))
    }

    /// The chat template around the user message `user` (escaped) and the system message.
    fn render_chat(&self, user: &str) -> Result<String, PromptError> {
        let system = self.system.as_deref();
        let mut messages = Vec::new();
        if let Some(system) = system {
            messages.push(Message {
                role: "system",
                content: system,
            });
        }
        messages.push(Message {
            role: "user",
            content: user.trim_end(),
        });
        let input_bytes = user.len() + system.as_ref().map_or(0, |s| s.len());
        let template = self
            .env
            .get_template("chat")
            .map_err(|e| self.render_err(e))?;
        render_bounded(
            &template,
            context! {
                messages => messages,
                add_generation_prompt => true,
                bos_token => &self.bos_token,
                eos_token => &self.eos_token,
            },
            input_bytes,
        )
        .map_err(|e| self.render_err(e))
    }

    fn render_err(&self, e: JinjaError) -> PromptError {
        PromptError::Render {
            name: self.name.clone(),
            message: format!("{e:#}"),
        }
    }

    /// Tokens of the prompt for `document`, the document cut so that the prompt plus
    /// `max_tokens` fits in `ctx` positions (`--overflow truncate`).
    pub fn build(
        &self,
        tokenizer: &Tokenizer,
        id: &str,
        document: &str,
        ctx: usize,
        max_tokens: usize,
    ) -> Result<BuiltPrompt, PromptError> {
        self.fit(tokenizer, id, document, ctx, max_tokens, Overflow::Truncate)
    }

    /// Tokens of the prompt for `document` such that the prompt plus `max_tokens` fits in
    /// `ctx` positions; a document too long for that is cut or refused, as `overflow` says.
    ///
    /// Only the first `ctx` × [`MAX_BYTES_PER_TOKEN`] bytes of a document are ever tokenized.
    pub fn fit(
        &self,
        tokenizer: &Tokenizer,
        id: &str,
        document: &str,
        ctx: usize,
        max_tokens: usize,
        overflow: Overflow,
    ) -> Result<BuiltPrompt, PromptError> {
        let available = available_tokens(ctx, max_tokens);
        let (head, precut) = cut_to_bytes(document, ctx.saturating_mul(MAX_BYTES_PER_TOKEN));
        let tokens = self.tokens(tokenizer, id, head)?;
        if tokens.len() <= available && !precut {
            return Ok(BuiltPrompt {
                tokens,
                truncated: false,
            });
        }
        if overflow != Overflow::Truncate {
            let needed = if tokens.len() > available {
                if precut {
                    TokenCount::MoreThan(tokens.len())
                } else {
                    TokenCount::Exactly(tokens.len())
                }
            } else {
                // The head fits: only the whole document can say whether it does too (rare:
                // it takes a text of unusually long tokens).
                let all = self.tokens(tokenizer, id, document)?;
                if all.len() <= available {
                    return Ok(BuiltPrompt {
                        tokens: all,
                        truncated: false,
                    });
                }
                TokenCount::Exactly(all.len())
            };
            return Err(PromptError::Overflow {
                needed,
                available,
                ctx,
                max_tokens,
                overflow,
            });
        }
        if tokens.len() <= available {
            // Already cut to the byte budget, and that fits.
            return Ok(BuiltPrompt {
                tokens,
                truncated: true,
            });
        }
        // Too long: keep the start of the document, as much as fits around the template.
        let overhead = self.tokens(tokenizer, id, "")?.len();
        let too_long = |needed| PromptError::TooLong {
            name: self.name.clone(),
            needed,
            available,
            ctx,
            max_tokens,
        };
        if overhead >= available {
            return Err(too_long(overhead));
        }
        let doc_tokens = tokenizer.encode_plain(head)?;
        let mut keep = (available - overhead).min(doc_tokens.len());
        // Re-tokenizing cut text can merge differently; shrink until it fits.
        loop {
            let cut = tokenizer.decode(&doc_tokens[..keep])?;
            let tokens = self.tokens(tokenizer, id, &cut)?;
            if tokens.len() <= available {
                return Ok(BuiltPrompt {
                    tokens,
                    truncated: true,
                });
            }
            if keep == 0 {
                return Err(too_long(tokens.len()));
            }
            keep = keep.saturating_sub((tokens.len() - available).max(8));
        }
    }
}

/// Prompt tokens that fit `ctx` positions with room for an answer of `max_tokens` (at most half
/// the context is kept for it).
pub fn available_tokens(ctx: usize, max_tokens: usize) -> usize {
    ctx.saturating_sub(max_tokens.min(ctx / 2)).max(1)
}

/// Renders `template` within its fuel and an output of at most
/// [`TEMPLATE_OUTPUT_BASE_BYTES`] + [`OUTPUT_BYTES_PER_INPUT_BYTE`] × `input_bytes` bytes.
fn render_bounded(
    template: &Template,
    ctx: Value,
    input_bytes: usize,
) -> Result<String, JinjaError> {
    let limit = TEMPLATE_OUTPUT_BASE_BYTES
        .saturating_add(input_bytes.saturating_mul(OUTPUT_BYTES_PER_INPUT_BYTE));
    let mut out = BoundedOutput {
        bytes: Vec::new(),
        limit,
        exceeded: false,
    };
    match template.render_captured_to(ctx, &mut out) {
        Ok(_) => {}
        Err(_) if out.exceeded => {
            return Err(JinjaError::new(
                ErrorKind::InvalidOperation,
                format!("its output exceeds the limit of {limit} bytes"),
            ))
        }
        Err(e) if e.kind() == ErrorKind::OutOfFuel => {
            return Err(JinjaError::new(
                ErrorKind::OutOfFuel,
                format!("it runs longer than the limit of {TEMPLATE_FUEL} template instructions"),
            ))
        }
        Err(e) => return Err(e),
    }
    String::from_utf8(out.bytes)
        .map_err(|e| JinjaError::new(ErrorKind::InvalidOperation, e.to_string()))
}

/// A render's output, refusing to grow past `limit` bytes.
struct BoundedOutput {
    bytes: Vec<u8>,
    limit: usize,
    exceeded: bool,
}

impl Write for BoundedOutput {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len() + buf.len() > self.limit {
            self.exceeded = true;
            return Err(std::io::Error::other("template output limit"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The longest start of `text` of at most `max_bytes` bytes that ends on a character boundary,
/// and whether anything was cut.
fn cut_to_bytes(text: &str, max_bytes: usize) -> (&str, bool) {
    if text.len() <= max_bytes {
        return (text, false);
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    (&text[..end], true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_fall_on_character_boundaries() {
        assert_eq!(cut_to_bytes("abc", 3), ("abc", false));
        assert_eq!(cut_to_bytes("abc", 2), ("ab", true));
        // 'é' is two bytes: a cut in its middle moves before it.
        assert_eq!(cut_to_bytes("aé", 2), ("a", true));
        assert_eq!(cut_to_bytes("ééé", 5), ("éé", true));
        assert_eq!(cut_to_bytes("é", 0), ("", true));
    }

    #[test]
    fn overflow_messages_say_what_happened() {
        let err = |overflow, needed| {
            PromptError::Overflow {
                needed,
                available: 200,
                ctx: 256,
                max_tokens: 56,
                overflow,
            }
            .to_string()
        };
        assert_eq!(
            err(Overflow::Skip, TokenCount::Exactly(300)),
            "longer than the context: the prompt needs 300 tokens, 200 fit (256 positions, 56 kept for the answer), skipped (--overflow skip)"
        );
        assert!(err(Overflow::Error, TokenCount::MoreThan(4000))
            .contains("needs more than 4000 tokens"));
        assert!(err(Overflow::Error, TokenCount::MoreThan(4000)).ends_with("(--overflow error)"));
    }
}

//! Prompts: a task template (`prompts/*.j2` or a file) rendered with the document, wrapped in
//! the model's chat template, tokenized and cut to fit the context.

use std::path::Path;

use minijinja::{context, Environment, Error as JinjaError, ErrorKind};
use serde::Serialize;

use crate::tokenizer::{Tokenizer, TokenizerError};

/// The task templates shipped in `prompts/`, embedded in the binary.
pub const BUILTIN_PROMPTS: &[(&str, &str)] = &[
    ("summarize", include_str!("../prompts/summarize.j2")),
    ("classify", include_str!("../prompts/classify.j2")),
    ("extract", include_str!("../prompts/extract.j2")),
    ("sentiment", include_str!("../prompts/sentiment.j2")),
    ("keywords", include_str!("../prompts/keywords.j2")),
];

/// Used when a GGUF carries no `tokenizer.chat_template`.
const CHATML_TEMPLATE: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    #[error("unknown prompt `{0}`: not a built-in ({list}) nor a readable file", list = builtin_names())]
    Unknown(String),
    #[error("prompt template `{name}` is invalid: {message}")]
    Syntax { name: String, message: String },
    #[error("prompt `{name}` failed to render: {message}")]
    Render { name: String, message: String },
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
}

/// Values a task template can use besides the document.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PromptVars {
    pub labels: Vec<String>,
    pub fields: Vec<String>,
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
    system: Option<String>,
    vars: PromptVars,
    bos_token: String,
    eos_token: String,
}

impl PromptBuilder {
    pub fn new(
        template: &PromptTemplate,
        chat_template: Option<&str>,
        system: Option<String>,
        vars: PromptVars,
        tokenizer: &Tokenizer,
    ) -> Result<Self, PromptError> {
        let mut env = Environment::new();
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
        env.add_template_owned("chat", chat_template.unwrap_or(CHATML_TEMPLATE).to_string())
            .map_err(|e| syntax("tokenizer.chat_template", e))?;
        Ok(Self {
            env,
            name: template.name.clone(),
            system,
            vars,
            bos_token: tokenizer.bos_token().unwrap_or_default().to_string(),
            eos_token: tokenizer.eos_token().unwrap_or_default().to_string(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The full prompt text for `document`.
    pub fn render(&self, id: &str, document: &str) -> Result<String, PromptError> {
        let render_err = |e: JinjaError| PromptError::Render {
            name: self.name.clone(),
            message: format!("{e:#}"),
        };
        let user = self
            .env
            .get_template("task")
            .and_then(|t| {
                t.render(context! {
                    document => document,
                    id => id,
                    labels => &self.vars.labels,
                    fields => &self.vars.fields,
                })
            })
            .map_err(render_err)?;
        let mut messages = Vec::new();
        if let Some(system) = &self.system {
            messages.push(Message {
                role: "system",
                content: system,
            });
        }
        messages.push(Message {
            role: "user",
            content: user.trim_end(),
        });
        self.env
            .get_template("chat")
            .and_then(|t| {
                t.render(context! {
                    messages => messages,
                    add_generation_prompt => true,
                    bos_token => &self.bos_token,
                    eos_token => &self.eos_token,
                })
            })
            .map_err(render_err)
    }

    /// Tokens of the prompt for `document`, the document cut so that the prompt plus
    /// `max_tokens` fits in `ctx` positions.
    pub fn build(
        &self,
        tokenizer: &Tokenizer,
        id: &str,
        document: &str,
        ctx: usize,
        max_tokens: usize,
    ) -> Result<BuiltPrompt, PromptError> {
        let available = ctx.saturating_sub(max_tokens.min(ctx / 2)).max(1);
        let tokens = tokenizer.encode(&self.render(id, document)?)?;
        if tokens.len() <= available {
            return Ok(BuiltPrompt {
                tokens,
                truncated: false,
            });
        }
        // Too long: keep the start of the document, as much as fits around the template.
        let overhead = tokenizer.encode(&self.render(id, "")?)?.len();
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
        let doc_tokens = tokenizer.encode_plain(document)?;
        let mut keep = (available - overhead).min(doc_tokens.len());
        // Re-tokenizing cut text can merge differently; shrink until it fits.
        loop {
            let cut = tokenizer.decode(&doc_tokens[..keep])?;
            let tokens = tokenizer.encode(&self.render(id, &cut)?)?;
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

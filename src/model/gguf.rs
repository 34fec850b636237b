//! A small typed reader over a GGUF file: metadata values and tensors by their llama.cpp names.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::QTensor;
use candle_core::Device;

use super::ModelError;

/// An opened GGUF file: its parsed header plus a reader positioned anywhere in it.
pub struct GgufFile {
    pub path: PathBuf,
    pub content: Content,
    reader: BufReader<File>,
}

impl GgufFile {
    pub fn open(path: &Path) -> Result<Self, ModelError> {
        let file = File::open(path).map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mut reader = BufReader::new(file);
        // candle's reader can panic on hostile headers (e.g. `general.alignment = 0`).
        let content = crate::panic_guard::catch_quietly(|| Content::read(&mut reader))
            .map_err(|panic| ModelError::Gguf {
                path: path.to_path_buf(),
                message: format!("malformed header ({panic})"),
            })?
            .map_err(|e| ModelError::Gguf {
                path: path.to_path_buf(),
                message: format!("{e}"),
            })?;
        Ok(Self {
            path: path.to_path_buf(),
            content,
            reader,
        })
    }

    pub fn value(&self, key: &str) -> Result<&Value, ModelError> {
        self.content
            .metadata
            .get(key)
            .ok_or_else(|| ModelError::MissingKey {
                key: key.to_string(),
                path: self.path.clone(),
            })
    }

    pub fn has(&self, key: &str) -> bool {
        self.content.metadata.contains_key(key)
    }

    fn bad_type(&self, key: &str, expected: &str) -> ModelError {
        ModelError::BadValue {
            key: key.to_string(),
            path: self.path.clone(),
            message: format!("expected {expected}"),
        }
    }

    pub fn string(&self, key: &str) -> Result<String, ModelError> {
        self.value(key)?
            .to_string()
            .cloned()
            .map_err(|_| self.bad_type(key, "a string"))
    }

    /// Any integer type, as GGUF writers disagree on which one to use.
    pub fn usize(&self, key: &str) -> Result<usize, ModelError> {
        let v = self.value(key)?;
        let n: i128 = match v {
            Value::U8(v) => *v as i128,
            Value::I8(v) => *v as i128,
            Value::U16(v) => *v as i128,
            Value::I16(v) => *v as i128,
            Value::U32(v) => *v as i128,
            Value::I32(v) => *v as i128,
            Value::U64(v) => *v as i128,
            Value::I64(v) => *v as i128,
            _ => return Err(self.bad_type(key, "an integer")),
        };
        usize::try_from(n).map_err(|_| self.bad_type(key, "a non-negative integer"))
    }

    pub fn f32(&self, key: &str) -> Result<f32, ModelError> {
        match self.value(key)? {
            Value::F32(v) => Ok(*v),
            Value::F64(v) => Ok(*v as f32),
            _ => Err(self.bad_type(key, "a float")),
        }
    }

    pub fn bool(&self, key: &str) -> Result<bool, ModelError> {
        self.value(key)?
            .to_bool()
            .map_err(|_| self.bad_type(key, "a bool"))
    }

    pub fn strings(&self, key: &str) -> Result<Vec<String>, ModelError> {
        self.array(key, "an array of strings", |v| v.to_string().ok().cloned())
    }

    pub fn floats(&self, key: &str) -> Result<Vec<f32>, ModelError> {
        self.array(key, "an array of floats", |v| match v {
            Value::F32(v) => Some(*v),
            Value::F64(v) => Some(*v as f32),
            _ => None,
        })
    }

    pub fn integers(&self, key: &str) -> Result<Vec<i64>, ModelError> {
        self.array(key, "an array of integers", |v| match v {
            Value::U8(v) => Some(*v as i64),
            Value::I8(v) => Some(*v as i64),
            Value::U16(v) => Some(*v as i64),
            Value::I16(v) => Some(*v as i64),
            Value::U32(v) => Some(*v as i64),
            Value::I32(v) => Some(*v as i64),
            Value::U64(v) => Some(*v as i64),
            Value::I64(v) => Some(*v),
            _ => None,
        })
    }

    /// The array at `key`, each element read by `item`; `expected` names the array's type in
    /// the error when an element is not of it.
    fn array<T>(
        &self,
        key: &str,
        expected: &str,
        item: impl Fn(&Value) -> Option<T>,
    ) -> Result<Vec<T>, ModelError> {
        let arr = self
            .value(key)?
            .to_vec()
            .map_err(|_| self.bad_type(key, "an array"))?;
        arr.iter()
            .map(|v| item(v).ok_or_else(|| self.bad_type(key, expected)))
            .collect()
    }

    pub fn has_tensor(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    pub fn tensor(&mut self, name: &str, device: &Device) -> Result<QTensor, ModelError> {
        if !self.has_tensor(name) {
            return Err(ModelError::MissingTensor {
                name: name.to_string(),
                path: self.path.clone(),
            });
        }
        self.content
            .tensor(&mut self.reader, name, device)
            .map_err(|e| ModelError::Gguf {
                path: self.path.clone(),
                message: format!("tensor `{name}`: {e}"),
            })
    }
}

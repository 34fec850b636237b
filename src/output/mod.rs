//! Records and the sinks that write them: CSV and JSONL, flushed record by record.

mod csv_sink;
mod jsonl_sink;
mod record;

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

pub use csv_sink::CsvSink;
pub use jsonl_sink::JsonlSink;
pub use record::{Record, Status, CSV_COLUMNS};

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Csv,
    Jsonl,
}

impl Format {
    /// From the output's extension: `.csv` is CSV, anything else JSONL.
    pub fn from_path(path: &str) -> Self {
        if path.to_ascii_lowercase().ends_with(".csv") {
            Format::Csv
        } else {
            Format::Jsonl
        }
    }
}

/// Where records go. Each record is on disk (or in the pipe) when `write` returns.
pub trait Sink {
    fn write(&mut self, record: &Record) -> io::Result<()>;
}

/// Keeps the records in memory, in the order they finished (`bench` compares them across K).
#[derive(Debug, Default)]
pub struct RecordBuffer {
    pub records: Vec<Record>,
}

impl Sink for RecordBuffer {
    fn write(&mut self, record: &Record) -> io::Result<()> {
        self.records.push(record.clone());
        Ok(())
    }
}

/// Opens `-` (the writer `stdout` gives) or a file, replacing it.
pub fn open_sink(
    output: &str,
    format: Format,
    stdout: impl FnOnce() -> Box<dyn Write>,
) -> io::Result<Box<dyn Sink>> {
    let writer: Box<dyn Write> = if output == "-" {
        stdout()
    } else {
        Box::new(BufWriter::new(File::create(Path::new(output))?))
    };
    Ok(match format {
        Format::Csv => Box::new(CsvSink::new(writer)?),
        Format::Jsonl => Box::new(JsonlSink::new(writer)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_follows_the_extension() {
        assert_eq!(Format::from_path("out.csv"), Format::Csv);
        assert_eq!(Format::from_path("OUT.CSV"), Format::Csv);
        assert_eq!(Format::from_path("out.jsonl"), Format::Jsonl);
        assert_eq!(Format::from_path("-"), Format::Jsonl);
    }
}

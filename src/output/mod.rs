//! Records and the sinks that write them: CSV and JSONL, flushed record by record.

mod csv_sink;
mod jsonl_sink;
pub mod lock;
pub mod read;
mod record;

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

pub use csv_sink::{csv_columns, CsvSink, ExtraColumns};
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
///
/// The file is not buffered: each record reaches it in one `write`, as a whole.
pub fn open_sink(
    output: &str,
    format: Format,
    extra: ExtraColumns,
    stdout: impl FnOnce() -> Box<dyn Write>,
) -> io::Result<Box<dyn Sink>> {
    let writer: Box<dyn Write> = if output == "-" {
        stdout()
    } else {
        Box::new(File::create(Path::new(output))?)
    };
    sink(writer, format, true, extra)
}

/// A sink of `format` over `writer`; `header` says whether a CSV header is written first,
/// `extra` which columns CSV rows have after the base ones (JSONL records carry `scores` and
/// `fields` when they have them).
pub fn sink(
    writer: Box<dyn Write>,
    format: Format,
    header: bool,
    extra: ExtraColumns,
) -> io::Result<Box<dyn Sink>> {
    Ok(match format {
        Format::Csv => Box::new(CsvSink::with_header(writer, header, extra)?),
        Format::Jsonl => Box::new(JsonlSink::new(writer)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts the writes that reach the file.
    #[derive(Clone, Default)]
    struct Writes(std::rc::Rc<std::cell::RefCell<Vec<Vec<u8>>>>);

    impl Write for Writes {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.borrow_mut().push(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn long_record() -> Record {
        let mut record = Record::error("id", "src", "p", String::new());
        record.output = "a \"quoted\", multi\nline answer ".repeat(2000);
        record
    }

    #[test]
    fn every_record_is_one_write() {
        for format in [Format::Csv, Format::Jsonl] {
            let writes = Writes::default();
            let mut out = sink(
                Box::new(writes.clone()),
                format,
                true,
                ExtraColumns::default(),
            )
            .expect("sink");
            let header_writes = writes.0.borrow().len();
            out.write(&long_record()).expect("write");
            out.write(&long_record()).expect("write");
            let writes = writes.0.borrow();
            assert_eq!(writes.len(), header_writes + 2, "{format:?}");
            assert!(writes.iter().all(|w| w.ends_with(b"\n")));
        }
    }

    #[test]
    fn format_follows_the_extension() {
        assert_eq!(Format::from_path("out.csv"), Format::Csv);
        assert_eq!(Format::from_path("OUT.CSV"), Format::Csv);
        assert_eq!(Format::from_path("out.jsonl"), Format::Jsonl);
        assert_eq!(Format::from_path("-"), Format::Jsonl);
    }
}

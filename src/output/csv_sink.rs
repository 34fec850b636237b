//! CSV output (RFC 4180 quoting by the csv crate), header first, one write per record.

use std::io::{self, Write};

use super::{Record, Sink, CSV_COLUMNS};

pub struct CsvSink {
    out: Box<dyn Write>,
    extra: ExtraColumns,
}

/// Columns after the base ones, known before the first record: one per top-level property of
/// the JSON answers' schemas, then `scores` when a prompt answers with labels.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtraColumns {
    pub properties: Vec<String>,
    pub scores: bool,
}

impl CsvSink {
    pub fn new(writer: Box<dyn Write>) -> io::Result<Self> {
        Self::with_header(writer, true, ExtraColumns::default())
    }

    /// `header = false` when appending to a file that already has one.
    pub fn with_header(
        writer: Box<dyn Write>,
        header: bool,
        extra: ExtraColumns,
    ) -> io::Result<Self> {
        let mut sink = Self { out: writer, extra };
        if header {
            sink.write_row(csv_columns(&sink.extra))?;
        }
        Ok(sink)
    }

    /// The whole row reaches `out` in one `write_all`, then is flushed: a kill leaves whole
    /// records behind, at most one torn.
    fn write_row<I, T>(&mut self, fields: I) -> io::Result<()>
    where
        I: IntoIterator<Item = T>,
        T: AsRef<[u8]>,
    {
        let mut bytes = Vec::new();
        {
            // Formats the row in memory (a writer per row costs nothing next to a generation).
            let mut row = csv::WriterBuilder::new()
                .has_headers(false)
                .from_writer(&mut bytes);
            row.write_record(fields)?;
            row.flush()?;
        }
        self.out.write_all(&bytes)?;
        self.out.flush()
    }
}

impl Sink for CsvSink {
    fn write(&mut self, record: &Record) -> io::Result<()> {
        let mut row = record.csv_row().to_vec();
        row.push(record.chunks.to_string());
        for property in &self.extra.properties {
            row.push(record.field_text(property));
        }
        if self.extra.scores {
            row.push(record.scores_text());
        }
        self.write_row(row)
    }
}

/// The CSV header: the base columns, `chunks`, then the extra ones.
pub fn csv_columns(extra: &ExtraColumns) -> Vec<String> {
    let mut columns: Vec<String> = CSV_COLUMNS.iter().map(|c| c.to_string()).collect();
    columns.push("chunks".into());
    columns.extend(extra.properties.iter().cloned());
    if extra.scores {
        columns.push("scores".into());
    }
    columns
}

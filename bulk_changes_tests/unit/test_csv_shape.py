"""Where a CSV file's records start (the lines errors name), found without the reader that
parses the file: it must split records exactly as pandas and the ``csv`` module do."""

from __future__ import annotations

import csv
import io

import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from bulk_changes.intake import csv_shape

# the characters that decide where records and fields end, and one that does not
tricky_text = st.text(alphabet='a,"\r\n ', max_size=60)
MANY = settings(max_examples=400, deadline=None, database=None)


def _csv_module_records(text: str) -> tuple[list[int], list[int]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    starts, fields, end = [], [], 0
    for values in reader:
        starts.append(end + 1)
        fields.append(max(len(values), 1))  # a blank line: [] there, one empty field here
        end = reader.line_num
    return starts, fields


@MANY
@given(tricky_text)
def test_records_start_on_the_lines_the_csv_module_finds(text):
    shape = csv_shape(text)
    starts, fields = _csv_module_records(text)
    if shape.unclosed is None:
        assert (shape.starts, shape.fields) == (starts, fields)
    else:  # the csv module takes the rest of the text into the unclosed field
        assert shape.starts == starts and shape.fields == fields[:-1]


@MANY
@given(tricky_text)
def test_pandas_reads_as_many_records_or_refuses_a_wide_or_unclosed_one(text):
    text = "h1,h2\n" + text
    shape = csv_shape(text)
    try:
        frame = pd.read_csv(
            io.StringIO(text),
            header=None,
            dtype=str,
            keep_default_na=False,
            na_filter=False,
            skip_blank_lines=False,
            engine="c",
        )
    except pd.errors.ParserError:
        assert shape.unclosed is not None or max(shape.fields) > 2
        return
    assert shape.unclosed is None and max(shape.fields) <= 2
    assert len(frame) == len(shape.starts)


def test_a_quoted_line_break_makes_the_next_record_start_a_line_later():
    shape = csv_shape('iccid,username\n1,"two\r\nlines"\n2,b\n')
    assert shape.starts == [1, 2, 4] and shape.fields == [2, 2, 2]


def test_a_quoted_field_never_closed_is_found_with_its_line():
    assert csv_shape('iccid,username\n1,a\n2,"b\n3,c\n').unclosed == 3

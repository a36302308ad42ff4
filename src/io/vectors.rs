//! Vector columns (`List`, `LargeList`, `FixedSizeList` of f16/f32/f64) and numeric feature columns
//! into row-major f32, with the per-row checks every detector relies on: no nulls, one length, finite.

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float16Type, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type, UInt16Type,
    UInt32Type, UInt64Type,
};
use arrow_array::{Array, ArrayRef};
use arrow_schema::DataType;

/// True for the vector column types we accept as activations.
pub fn is_float_vector(data_type: &DataType) -> bool {
    match data_type {
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
            matches!(f.data_type(), DataType::Float16 | DataType::Float32 | DataType::Float64)
        }
        _ => false,
    }
}

/// True for scalar numeric columns usable with `--feature-cols`.
pub fn is_numeric_scalar(data_type: &DataType) -> bool {
    data_type.is_integer() || data_type.is_floating()
}

/// A problem with one row of a batch: (row within the batch, what is wrong).
pub type RowProblem = (usize, String);

/// Length of the first row's vector (`None` when that row is null).
pub fn first_length(column: &ArrayRef) -> Option<usize> {
    if column.is_empty() || column.is_null(0) {
        return None;
    }
    row_spans(column).ok().map(|spans| spans[0].1)
}

/// (start, len) of each row's vector inside the child values array.
fn row_spans(column: &ArrayRef) -> Result<Vec<(usize, usize)>, String> {
    let n = column.len();
    Ok(match column.data_type() {
        DataType::List(_) => {
            let offsets = column.as_list::<i32>().value_offsets();
            (0..n)
                .map(|i| (offsets[i] as usize, (offsets[i + 1] - offsets[i]) as usize))
                .collect()
        }
        DataType::LargeList(_) => {
            let offsets = column.as_list::<i64>().value_offsets();
            (0..n)
                .map(|i| (offsets[i] as usize, (offsets[i + 1] - offsets[i]) as usize))
                .collect()
        }
        DataType::FixedSizeList(_, _) => {
            let list = column.as_fixed_size_list();
            (0..n)
                .map(|i| (list.value_offset_at(i), list.value_length() as usize))
                .collect()
        }
        other => return Err(format!("type {other} is not a vector column")),
    })
}

fn child_values(column: &ArrayRef) -> &ArrayRef {
    match column.data_type() {
        DataType::List(_) => column.as_list::<i32>().values(),
        DataType::LargeList(_) => column.as_list::<i64>().values(),
        _ => column.as_fixed_size_list().values(),
    }
}

/// Copies every row of a vector column into `dest(row)` (a `dim`-long slice), checking each row.
/// Stops at the first bad row.
pub fn copy_vectors<'d>(
    column: &ArrayRef,
    dim: usize,
    mut dest: impl FnMut(usize) -> &'d mut [f32],
) -> Result<(), RowProblem> {
    let spans = row_spans(column).map_err(|e| (0, e))?;
    let values = child_values(column);
    let value_nulls = values.nulls().filter(|n| n.null_count() > 0);
    for (row, &(start, len)) in spans.iter().enumerate() {
        if column.is_null(row) {
            return Err((row, "vector is null; every row needs a vector".into()));
        }
        if len == 0 {
            return Err((row, "vector is empty (length 0)".into()));
        }
        if len != dim {
            return Err((
                row,
                format!(
                    "vector length {len}, expected {dim} (the length of the first row); vectors must all have one length"
                ),
            ));
        }
        if let Some(j) = value_nulls.and_then(|nulls| (start..start + len).find(|&j| nulls.is_null(j))) {
            return Err((row, format!("element {} is null", j - start)));
        }
        let out = dest(row);
        match values.data_type() {
            DataType::Float32 => {
                out.copy_from_slice(&values.as_primitive::<Float32Type>().values()[start..start + len])
            }
            DataType::Float64 => {
                let src = &values.as_primitive::<Float64Type>().values()[start..start + len];
                out.iter_mut().zip(src).for_each(|(o, &v)| *o = v as f32);
            }
            DataType::Float16 => {
                let src = &values.as_primitive::<Float16Type>().values()[start..start + len];
                out.iter_mut().zip(src).for_each(|(o, &v)| *o = v.to_f32());
            }
            other => return Err((row, format!("element type {other} is not a float"))),
        }
        if let Some(j) = out.iter().position(|v| !v.is_finite()) {
            return Err((
                row,
                format!(
                    "element {j} is {} (NaN and ±Inf are not allowed; f64 values beyond f32 range count as Inf)",
                    out[j]
                ),
            ));
        }
    }
    Ok(())
}

/// Whether a column type is dictionary-encoded values of `value_ok` (pandas and polars write
/// categorical columns so).
pub fn is_dictionary_of(data_type: &DataType, value_ok: impl Fn(&DataType) -> bool) -> bool {
    matches!(data_type, DataType::Dictionary(k, v) if k.is_integer() && value_ok(v))
}

/// A dictionary-encoded column as its plain values, any other column as it is: a key is the
/// value, not its place in the dictionary.
pub fn decoded(column: &ArrayRef) -> ArrayRef {
    match column.data_type() {
        DataType::Dictionary(_, values) => arrow_cast::cast(column, values)
            .expect("the reader only accepts dictionaries of strings and integers, which cast to their values"),
        _ => column.clone(),
    }
}

/// An integer column (any width, signed or not) as i64, exactly; unsigned values above
/// `i64::MAX` wrap, which keeps them distinct. Nulls read as 0 (callers reject nulls first).
pub fn integer_values(column: &ArrayRef) -> Vec<i64> {
    macro_rules! ints {
        ($($t:ty => $dt:ident),*) => {
            match column.data_type() {
                $(DataType::$dt => column.as_primitive::<$t>().values().iter().map(|&v| v as i64).collect(),)*
                _ => vec![0; column.len()],
            }
        };
    }
    ints!(Int8Type => Int8, Int16Type => Int16, Int32Type => Int32, Int64Type => Int64,
          UInt8Type => UInt8, UInt16Type => UInt16, UInt32Type => UInt32, UInt64Type => UInt64)
}

/// One numeric scalar column as f64, checking for nulls and non-finite values.
pub fn numeric_column(column: &ArrayRef) -> Result<Vec<f64>, RowProblem> {
    macro_rules! prim {
        ($t:ty) => {
            column
                .as_primitive::<$t>()
                .values()
                .iter()
                .map(|&v| v as f64)
                .collect::<Vec<f64>>()
        };
    }
    if let Some(row) = (0..column.len()).find(|&i| column.is_null(i)) {
        return Err((row, "value is null".into()));
    }
    let values: Vec<f64> = match column.data_type() {
        DataType::Float16 => column
            .as_primitive::<Float16Type>()
            .values()
            .iter()
            .map(|v| v.to_f64())
            .collect(),
        DataType::Float32 => prim!(Float32Type),
        DataType::Float64 => prim!(Float64Type),
        DataType::Int8 => prim!(Int8Type),
        DataType::Int16 => prim!(Int16Type),
        DataType::Int32 => prim!(Int32Type),
        DataType::Int64 => prim!(Int64Type),
        DataType::UInt8 => prim!(UInt8Type),
        DataType::UInt16 => prim!(UInt16Type),
        DataType::UInt32 => prim!(UInt32Type),
        DataType::UInt64 => prim!(UInt64Type),
        other => return Err((0, format!("type {other} is not numeric"))),
    };
    if let Some(row) = values.iter().position(|v| !v.is_finite()) {
        return Err((row, format!("value {} is not finite", values[row])));
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::builder::{Float32Builder, ListBuilder};
    use std::sync::Arc;

    fn list(rows: &[Option<Vec<Option<f32>>>]) -> ArrayRef {
        let mut b = ListBuilder::new(Float32Builder::new());
        for r in rows {
            match r {
                None => b.append_null(),
                Some(v) => {
                    for e in v {
                        b.values().append_option(*e);
                    }
                    b.append(true);
                }
            }
        }
        Arc::new(b.finish())
    }

    fn copy(col: &ArrayRef, dim: usize) -> Result<Vec<f32>, RowProblem> {
        let mut out = vec![0f32; col.len() * dim];
        let mut chunks: Vec<&mut [f32]> = out.chunks_mut(dim).collect();
        let mut taken: Vec<Option<&mut [f32]>> = chunks.drain(..).map(Some).collect();
        copy_vectors(col, dim, |r| taken[r].take().unwrap())?;
        Ok(out)
    }

    #[test]
    fn copies_good_rows() {
        let col = list(&[Some(vec![Some(1.0), Some(2.0)]), Some(vec![Some(3.0), Some(4.0)])]);
        assert_eq!(copy(&col, 2).unwrap(), vec![1.0, 2.0, 3.0, 4.0]);
        assert_eq!(first_length(&col), Some(2));
    }

    #[test]
    fn rejects_each_bad_row_kind() {
        let ragged = list(&[Some(vec![Some(1.0), Some(2.0)]), Some(vec![Some(3.0)])]);
        assert!(copy(&ragged, 2).unwrap_err().1.contains("length 1, expected 2"));
        let null = list(&[Some(vec![Some(1.0), Some(2.0)]), None]);
        assert_eq!(copy(&null, 2).unwrap_err().0, 1);
        let empty = list(&[Some(vec![])]);
        assert!(copy(&empty, 2).unwrap_err().1.contains("empty"));
        let nan = list(&[Some(vec![Some(1.0), Some(f32::NAN)])]);
        assert!(copy(&nan, 2).unwrap_err().1.contains("NaN"));
        let null_elem = list(&[Some(vec![Some(1.0), None])]);
        assert!(copy(&null_elem, 2).unwrap_err().1.contains("element 1 is null"));
    }
}

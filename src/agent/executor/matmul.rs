//! `matmul`: a dense matrix-multiplication benchmark whose result anyone can verify cheaply.
//!
//! # Input (`task_data`)
//! `{"n": N, "dtype": "f32"|"f64", "iterations": I, "seed": S}`
//! - `n`: matrix order, 1..=[`MATMUL_N_MAX`] (required);
//! - `dtype`: element type, `"f32"` or `"f64"` (default `"f64"`);
//! - `iterations`: how many times C = A·B is computed, 1..=[`MATMUL_ITERATIONS_MAX`]
//!   (default 1);
//! - `seed`: unsigned 64-bit seed of the input generator (default 0).
//!
//! # Output (`result_data`)
//! `{"seconds", "gflops", "checksum", "n", "dtype", "iterations"}` where `seconds` is the
//! wall time of the multiplications only (not the generation), `gflops` is
//! 2·n³·iterations / seconds / 10⁹ and `checksum` is uᵀ·C·v accumulated in f64.
//!
//! # The input generator (so any client can regenerate the inputs)
//! One SplitMix64 stream (Steele, Lea, Flood 2014; the `splitmix64` of Vigna's public-domain
//! reference: `state += 0x9E3779B97F4A7C15; z = state; z = (z ^ (z >> 30)) *
//! 0xBF58476D1CE4E5B9; z = (z ^ (z >> 27)) * 0x94D049BB133111EB; return z ^ (z >> 31)`,
//! all wrapping 64-bit), with the initial state equal to `seed`, yields in this order:
//! 1. `u`: n signs, then 2. `v`: n signs — each `-1` if the output's top bit is set, else `+1`;
//! 3. `A`: n² elements, row-major; then 4. `B`: n² elements, row-major. An element is uniform
//!    in [-1, 1): for f64 `(x >> 11) · 2⁻⁵² − 1`, for f32 `(x >> 40) · 2⁻²³ − 1`; both are
//!    exact in their type.
//!
//! # Verification (Freivalds-style, O(n²) time, O(n) memory)
//! Because u and v come first, a verifier streams A row by row to get y = uᵀ·A, then streams
//! B to get uᵀ·A·B·v = Σₖ yₖ·(Bₖ·v), all in f64, and compares it with `checksum` within
//! [`checksum_tolerance`]. A wrong entry of C by δ shifts the checksum by ±δ, and a made-up
//! checksum is caught unless it lands within the tolerance of the true one. See
//! [`verify_matmul`].
//!
//! The same check outside Rust (Python with NumPy, f64 inputs; for f32 use
//! `((x >> 40) * 2.0**-23) - 1` and keep the values exact in float32):
//! ```text
//! M = (1 << 64) - 1
//! def splitmix64(state):
//!     while True:
//!         state = (state + 0x9E3779B97F4A7C15) & M
//!         z = state
//!         z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M
//!         z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M
//!         yield z ^ (z >> 31)
//! g = splitmix64(seed)
//! u = np.array([-1.0 if next(g) >> 63 else 1.0 for _ in range(n)])
//! v = np.array([-1.0 if next(g) >> 63 else 1.0 for _ in range(n)])
//! A = np.array([(next(g) >> 11) * 2.0**-52 - 1 for _ in range(n * n)]).reshape(n, n)
//! B = np.array([(next(g) >> 11) * 2.0**-52 - 1 for _ in range(n * n)]).reshape(n, n)
//! expected = u @ (A @ (B @ v))
//! tolerance = 16 * np.finfo(np.float64).eps * np.linalg.norm(A) * np.linalg.norm(B)
//! assert abs(result["checksum"] - expected) <= tolerance
//! ```

use std::time::Instant;

use ndarray::linalg::general_mat_mul;
use ndarray::{Array2, LinalgScalar, s};
use serde_json::{Value, json};

use super::{CancelFlag, ExecError, Executor, u64_field};

/// Largest matrix order accepted (three f64 matrices of this order take 1.5 GiB).
pub const MATMUL_N_MAX: u64 = 8192;
/// Most iterations accepted in one task.
pub const MATMUL_ITERATIONS_MAX: u64 = 1000;
/// Rows of C computed per `general_mat_mul` call; the cancel flag is checked between
/// panels so a large multiplication stops within one panel's time. Big enough that
/// re-packing B per panel costs only a few percent.
const PANEL_ROWS: usize = 256;

/// Element type of a `matmul` task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dtype {
    /// IEEE 754 binary32.
    F32,
    /// IEEE 754 binary64.
    F64,
}

impl Dtype {
    /// The name used in JSON: `"f32"` or `"f64"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Dtype::F32 => "f32",
            Dtype::F64 => "f64",
        }
    }

    /// Machine epsilon of the type (distance from 1.0 to the next value).
    pub fn epsilon(self) -> f64 {
        match self {
            Dtype::F32 => f64::from(f32::EPSILON),
            Dtype::F64 => f64::EPSILON,
        }
    }
}

/// A validated `matmul` input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatmulInput {
    /// Matrix order (count), 1..=[`MATMUL_N_MAX`].
    pub n: usize,
    /// Element type.
    pub dtype: Dtype,
    /// Repetitions of C = A·B (count), 1..=[`MATMUL_ITERATIONS_MAX`].
    pub iterations: u32,
    /// Initial SplitMix64 state.
    pub seed: u64,
}

impl MatmulInput {
    /// Validate `task_data`; the error names the offending field.
    pub fn parse(task_data: &Value) -> Result<Self, ExecError> {
        let object = task_data
            .as_object()
            .ok_or_else(|| ExecError::invalid("task_data", "must be a JSON object"))?;
        let n = u64_field(task_data, "n", 1..=MATMUL_N_MAX)? as usize;
        let dtype = match object.get("dtype") {
            None => Dtype::F64,
            Some(Value::String(s)) if s == "f32" => Dtype::F32,
            Some(Value::String(s)) if s == "f64" => Dtype::F64,
            Some(other) => {
                return Err(ExecError::invalid(
                    "dtype",
                    format!("must be \"f32\" or \"f64\", got {other}"),
                ));
            }
        };
        let iterations = if object.contains_key("iterations") {
            u64_field(task_data, "iterations", 1..=MATMUL_ITERATIONS_MAX)? as u32
        } else {
            1
        };
        let seed = if object.contains_key("seed") {
            u64_field(task_data, "seed", 0..=u64::MAX)?
        } else {
            0
        };
        Ok(Self {
            n,
            dtype,
            iterations,
            seed,
        })
    }

    /// Floating-point operations of the whole task: 2·n³·iterations.
    pub fn flops(&self) -> f64 {
        2.0 * (self.n as f64).powi(3) * f64::from(self.iterations)
    }
}

/// The SplitMix64 generator described in the module docs.
#[derive(Clone, Debug)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator whose initial state is `seed`.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next 64 pseudo-random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// `-1.0` if the next output's top bit is set, else `+1.0`.
    pub fn next_sign(&mut self) -> f64 {
        if self.next_u64() >> 63 == 1 {
            -1.0
        } else {
            1.0
        }
    }
}

/// An element type the executor can generate and multiply.
trait Element: LinalgScalar + Into<f64> + Send + Sync {
    fn from_random(bits: u64) -> Self;
}

impl Element for f64 {
    fn from_random(bits: u64) -> Self {
        // k · 2⁻⁵² for k < 2⁵³ lies on the f64 grid of [0, 2); subtracting 1 is exact.
        (bits >> 11) as f64 * f64::powi(2.0, -52) - 1.0
    }
}

impl Element for f32 {
    fn from_random(bits: u64) -> Self {
        (bits >> 40) as f32 * f32::powi(2.0, -23) - 1.0
    }
}

/// The sign vectors u and v, then A and B, generated exactly as the module docs say.
struct Inputs<T> {
    u: Vec<f64>,
    v: Vec<f64>,
    a: Array2<T>,
    b: Array2<T>,
}

/// An n×n matrix whose buffer is reserved fallibly, so a size the machine cannot hold is an
/// error instead of an allocation abort that would take the whole agent down.
fn try_matrix<T: Element>(n: usize, mut fill: impl FnMut() -> T) -> Result<Array2<T>, ExecError> {
    let mut buffer = Vec::new();
    buffer.try_reserve_exact(n * n).map_err(|_| {
        ExecError::Transient(format!(
            "could not allocate a {n}x{n} matrix ({} MiB)",
            n * n * std::mem::size_of::<T>() / (1024 * 1024)
        ))
    })?;
    buffer.extend((0..n * n).map(|_| fill()));
    Ok(Array2::from_shape_vec((n, n), buffer).expect("buffer holds n*n elements"))
}

fn generate<T: Element>(n: usize, seed: u64) -> Result<Inputs<T>, ExecError> {
    let mut rng = SplitMix64::new(seed);
    let u = (0..n).map(|_| rng.next_sign()).collect();
    let v = (0..n).map(|_| rng.next_sign()).collect();
    let a = try_matrix(n, || T::from_random(rng.next_u64()))?;
    let b = try_matrix(n, || T::from_random(rng.next_u64()))?;
    Ok(Inputs { u, v, a, b })
}

/// Refuse (retryably: another node may have room) a task whose three matrices do not fit in
/// the memory available now. Linux overcommits, so without this check a too-large task
/// would be killed by the OOM killer together with the agent rather than fail cleanly.
fn check_memory(input: &MatmulInput) -> Result<(), ExecError> {
    let element_bytes = match input.dtype {
        Dtype::F32 => 4,
        Dtype::F64 => 8,
    };
    let needed = 3 * (input.n as u64).pow(2) * element_bytes;
    let mut system = sysinfo::System::new();
    system.refresh_memory();
    let available = system.available_memory();
    // A machine that reports no figures (0) is not second-guessed.
    if available > 0 && needed > available {
        return Err(ExecError::Transient(format!(
            "matmul n={} {} needs {} MiB but only {} MiB of memory is available",
            input.n,
            input.dtype.as_str(),
            needed / (1024 * 1024),
            available / (1024 * 1024)
        )));
    }
    Ok(())
}

/// uᵀ·C·v accumulated in f64.
fn bilinear<T: Element>(u: &[f64], c: &Array2<T>, v: &[f64]) -> f64 {
    c.rows()
        .into_iter()
        .zip(u)
        .map(|(row, ui)| {
            let dot: f64 = row.iter().zip(v).map(|(&cij, vj)| cij.into() * vj).sum();
            ui * dot
        })
        .sum()
}

/// Multiply `iterations` times; returns (seconds spent multiplying, checksum).
fn multiply<T: Element>(input: &MatmulInput, cancel: &CancelFlag) -> Result<(f64, f64), ExecError> {
    let n = input.n;
    let Inputs { u, v, a, b } = generate::<T>(n, input.seed)?;
    let mut c = try_matrix(n, T::zero)?;
    let started = Instant::now();
    for _ in 0..input.iterations {
        for row_start in (0..n).step_by(PANEL_ROWS) {
            if let Some(reason) = cancel.reason() {
                return Err(ExecError::Cancelled(reason));
            }
            let rows = row_start..(row_start + PANEL_ROWS).min(n);
            general_mat_mul(
                T::one(),
                &a.slice(s![rows.clone(), ..]),
                &b,
                T::zero(),
                &mut c.slice_mut(s![rows, ..]),
            );
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok((seconds, bilinear(&u, &c, &v)))
}

/// The `matmul` executor (see the module docs for input, output and generator).
#[derive(Clone, Copy, Debug, Default)]
pub struct MatmulExecutor;

impl Executor for MatmulExecutor {
    fn run(&self, task_data: &Value, cancel: &CancelFlag) -> Result<Value, ExecError> {
        let input = MatmulInput::parse(task_data)?;
        check_memory(&input)?;
        let (seconds, checksum) = match input.dtype {
            Dtype::F32 => multiply::<f32>(&input, cancel)?,
            Dtype::F64 => multiply::<f64>(&input, cancel)?,
        };
        // A tiny product can finish below the clock's resolution; keep gflops finite.
        let gflops = input.flops() / seconds.max(1e-9) / 1e9;
        Ok(json!({
            "seconds": seconds,
            "gflops": gflops,
            "checksum": checksum,
            "n": input.n,
            "dtype": input.dtype.as_str(),
            "iterations": input.iterations,
        }))
    }
}

/// Why a `matmul` result was rejected by [`verify_matmul`].
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum VerifyError {
    /// The task's own input is not a valid `matmul` input.
    #[error("task_data is not a valid matmul input: {0}")]
    TaskData(ExecError),
    /// A result field is missing or has the wrong type.
    #[error("result_data field `{field}`: {reason}")]
    ResultField {
        /// The result field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A result field disagrees with the task's input.
    #[error("result_data field `{field}` is {got}, but the task asked for {expected}")]
    InputMismatch {
        /// The result field.
        field: &'static str,
        /// The value from `task_data`.
        expected: String,
        /// The value in `result_data`.
        got: String,
    },
    /// The checksum is not uᵀ·A·B·v within the tolerance.
    #[error("checksum {got} differs from the recomputed {expected} by more than {tolerance}")]
    Checksum {
        /// uᵀ·A·B·v recomputed in f64.
        expected: f64,
        /// The reported checksum.
        got: f64,
        /// Largest accepted absolute difference.
        tolerance: f64,
    },
}

/// Largest accepted |reported − recomputed| checksum difference, given ‖A‖_F·‖B‖_F.
///
/// Rounding errors of the n² dot products are independent with random signs, so the error of
/// uᵀ·C·v stays about ε·‖A‖_F·‖B‖_F whatever n is (measured here: at most 0.94·ε·‖A‖_F·‖B‖_F
/// over n = 1..1024 and both dtypes, blocked FMA kernel against the f64 recomputation). The
/// tolerance allows 16 times that, so any correct kernel passes, while a wrong entry of C
/// larger than the tolerance (or a made-up checksum) is caught.
pub fn checksum_tolerance(dtype: Dtype, frobenius_product: f64) -> f64 {
    16.0 * dtype.epsilon() * frobenius_product
}

/// Recompute uᵀ·A·B·v and ‖A‖_F·‖B‖_F in f64 by streaming the generator (O(n²) time, O(n)
/// memory).
fn recompute<T: Element>(input: &MatmulInput) -> (f64, f64) {
    let n = input.n;
    let mut rng = SplitMix64::new(input.seed);
    let u: Vec<f64> = (0..n).map(|_| rng.next_sign()).collect();
    let v: Vec<f64> = (0..n).map(|_| rng.next_sign()).collect();
    let mut y = vec![0.0f64; n]; // uᵀ·A
    let mut a_norm2 = 0.0f64;
    for ui in &u {
        for yk in y.iter_mut() {
            let a: f64 = T::from_random(rng.next_u64()).into();
            a_norm2 += a * a;
            *yk += ui * a;
        }
    }
    let mut expected = 0.0f64;
    let mut b_norm2 = 0.0f64;
    for yk in &y {
        let mut row_dot_v = 0.0f64; // Bₖ·v
        for vj in &v {
            let b: f64 = T::from_random(rng.next_u64()).into();
            b_norm2 += b * b;
            row_dot_v += b * vj;
        }
        expected += yk * row_dot_v;
    }
    (expected, (a_norm2 * b_norm2).sqrt())
}

/// Check a `matmul` result against its task input without redoing the multiplication:
/// `n`, `dtype` and `iterations` must match the input, `seconds` and `gflops` must be
/// non-negative numbers, and `checksum` must equal uᵀ·A·B·v within
/// [`checksum_tolerance`]. O(n²) time, O(n) memory.
pub fn verify_matmul(task_data: &Value, result_data: &Value) -> Result<(), VerifyError> {
    let input = MatmulInput::parse(task_data).map_err(VerifyError::TaskData)?;
    let number = |field: &'static str| -> Result<f64, VerifyError> {
        let value = result_data
            .get(field)
            .ok_or_else(|| VerifyError::ResultField {
                field,
                reason: "missing".into(),
            })?;
        value
            .as_f64()
            .filter(|x| x.is_finite())
            .ok_or_else(|| VerifyError::ResultField {
                field,
                reason: format!("must be a finite number, got {value}"),
            })
    };
    let mismatch =
        |field: &'static str, expected: String, got: Option<&Value>| VerifyError::InputMismatch {
            field,
            expected,
            got: got.map_or_else(|| "missing".to_owned(), Value::to_string),
        };
    if result_data.get("n").and_then(Value::as_u64) != Some(input.n as u64) {
        return Err(mismatch("n", input.n.to_string(), result_data.get("n")));
    }
    if result_data.get("dtype").and_then(Value::as_str) != Some(input.dtype.as_str()) {
        return Err(mismatch(
            "dtype",
            format!("\"{}\"", input.dtype.as_str()),
            result_data.get("dtype"),
        ));
    }
    if result_data.get("iterations").and_then(Value::as_u64) != Some(u64::from(input.iterations)) {
        return Err(mismatch(
            "iterations",
            input.iterations.to_string(),
            result_data.get("iterations"),
        ));
    }
    for field in ["seconds", "gflops"] {
        if number(field)? < 0.0 {
            return Err(VerifyError::ResultField {
                field,
                reason: "must not be negative".into(),
            });
        }
    }
    let got = number("checksum")?;
    let (expected, frobenius_product) = match input.dtype {
        Dtype::F32 => recompute::<f32>(&input),
        Dtype::F64 => recompute::<f64>(&input),
    };
    let tolerance = checksum_tolerance(input.dtype, frobenius_product);
    if (got - expected).abs() > tolerance {
        return Err(VerifyError::Checksum {
            expected,
            got,
            tolerance,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::executor::CancelReason;

    fn run(data: Value) -> Result<Value, ExecError> {
        MatmulExecutor.run(&data, &CancelFlag::new())
    }

    #[test]
    fn splitmix64_matches_the_reference_sequence() {
        // First outputs of Vigna's splitmix64.c with state 0 — any client implementation
        // can check itself against these.
        let mut rng = SplitMix64::new(0);
        assert_eq!(rng.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(rng.next_u64(), 0x6E78_9E6A_A1B9_65F4);
        assert_eq!(rng.next_u64(), 0x06C4_5D18_8009_454F);
    }

    #[test]
    fn checksum_matches_the_python_reference_in_the_module_docs() {
        // Known answers computed by the Python snippet of the module docs (pure-Python
        // loops instead of NumPy) for n = 4, seed = 2024.
        for (dtype, want) in [("f64", -4.160684352369894), ("f32", -4.160684149695982)] {
            let task = json!({"n": 4, "dtype": dtype, "seed": 2024});
            let out = run(task.clone()).unwrap();
            let got = out["checksum"].as_f64().unwrap();
            assert!((got - want).abs() < 1e-5, "{dtype}: {got} vs {want}");
            verify_matmul(&task, &out).unwrap();
        }
    }

    #[test]
    fn elements_are_in_the_half_open_unit_interval() {
        assert_eq!(<f64 as Element>::from_random(0), -1.0);
        assert_eq!(<f32 as Element>::from_random(0), -1.0);
        assert!(<f64 as Element>::from_random(u64::MAX) < 1.0);
        assert!(<f32 as Element>::from_random(u64::MAX) < 1.0);
        assert_eq!(<f64 as Element>::from_random(1 << 63), 0.0);
        assert_eq!(<f32 as Element>::from_random(1 << 63), 0.0);
    }

    #[test]
    fn checksum_equals_an_independent_naive_product() {
        // Tiny case computed by the obvious triple loop from the documented stream order.
        let n = 3;
        let mut rng = SplitMix64::new(42);
        let u: Vec<f64> = (0..n).map(|_| rng.next_sign()).collect();
        let v: Vec<f64> = (0..n).map(|_| rng.next_sign()).collect();
        let a: Vec<f64> = (0..n * n)
            .map(|_| <f64 as Element>::from_random(rng.next_u64()))
            .collect();
        let b: Vec<f64> = (0..n * n)
            .map(|_| <f64 as Element>::from_random(rng.next_u64()))
            .collect();
        let mut want = 0.0;
        for i in 0..n {
            for j in 0..n {
                let cij: f64 = (0..n).map(|k| a[i * n + k] * b[k * n + j]).sum();
                want += u[i] * cij * v[j];
            }
        }
        let out = run(json!({"n": 3, "dtype": "f64", "iterations": 2, "seed": 42})).unwrap();
        let got = out["checksum"].as_f64().unwrap();
        assert!((got - want).abs() < 1e-12, "{got} vs {want}");
        assert_eq!(out["n"], 3);
        assert_eq!(out["dtype"], "f64");
        assert_eq!(out["iterations"], 2);
        assert!(out["seconds"].as_f64().unwrap() >= 0.0);
        assert!(out["gflops"].as_f64().unwrap().is_finite());
    }

    fn accepts_real_and_rejects_tampered(dtype: &str) {
        // Sizes below, at and above one panel, so the panel split is covered too.
        for (n, seed) in [(1, 7), (17, 1), (256, 2), (300, 3)] {
            let task = json!({"n": n, "dtype": dtype, "iterations": 2, "seed": seed});
            let result = run(task.clone()).unwrap();
            verify_matmul(&task, &result).unwrap_or_else(|e| panic!("n={n}: {e}"));

            let checksum = result["checksum"].as_f64().unwrap();
            let mut tampered = result.clone();
            // One entry of C off by δ moves the checksum by exactly ±δ; δ is well above the
            // dtype's rounding at these sizes.
            let delta = if dtype == "f32" { 0.5 } else { 1e-6 };
            tampered["checksum"] = json!(checksum + delta);
            assert!(
                matches!(
                    verify_matmul(&task, &tampered),
                    Err(VerifyError::Checksum { .. })
                ),
                "n={n} {dtype}: tampered checksum accepted"
            );
            // The right checksum for another seed is wrong for this one.
            let other = run(json!({"n": n, "dtype": dtype, "seed": seed + 100})).unwrap();
            tampered["checksum"] = other["checksum"].clone();
            assert!(verify_matmul(&task, &tampered).is_err(), "n={n} {dtype}");
        }
    }

    #[test]
    fn verify_accepts_real_and_rejects_tampered_f64() {
        accepts_real_and_rejects_tampered("f64");
    }

    #[test]
    fn verify_accepts_real_and_rejects_tampered_f32() {
        accepts_real_and_rejects_tampered("f32");
    }

    #[test]
    fn verify_rejects_results_for_another_input() {
        let task = json!({"n": 8, "dtype": "f32", "iterations": 1, "seed": 5});
        let result = run(task.clone()).unwrap();
        for (field, value) in [
            ("n", json!(9)),
            ("dtype", json!("f64")),
            ("iterations", json!(2)),
        ] {
            let mut wrong = result.clone();
            wrong[field] = value;
            match verify_matmul(&task, &wrong) {
                Err(VerifyError::InputMismatch { field: got, .. }) => assert_eq!(got, field),
                other => panic!("{field}: {other:?}"),
            }
        }
        let mut missing = result.clone();
        missing.as_object_mut().unwrap().remove("checksum");
        assert!(matches!(
            verify_matmul(&task, &missing),
            Err(VerifyError::ResultField {
                field: "checksum",
                ..
            })
        ));
        assert!(matches!(
            verify_matmul(&json!({"n": 0}), &result),
            Err(VerifyError::TaskData(_))
        ));
    }

    #[test]
    fn bad_inputs_name_the_field_and_are_not_retryable() {
        for (input, field) in [
            (json!(null), "task_data"),
            (json!("n=3"), "task_data"),
            (json!({}), "n"),
            (json!({"n": 0}), "n"),
            (json!({"n": 8193}), "n"),
            (json!({"n": 2.5}), "n"),
            (json!({"n": "64"}), "n"),
            (json!({"n": 4, "dtype": "f16"}), "dtype"),
            (json!({"n": 4, "dtype": 32}), "dtype"),
            (json!({"n": 4, "iterations": 0}), "iterations"),
            (json!({"n": 4, "iterations": 1001}), "iterations"),
            (json!({"n": 4, "seed": -1}), "seed"),
        ] {
            match run(input.clone()) {
                Err(err @ ExecError::InvalidInput { .. }) => {
                    assert!(!err.retryable());
                    let ExecError::InvalidInput { field: got, .. } = err else {
                        unreachable!()
                    };
                    assert_eq!(got, field, "{input}");
                }
                other => panic!("{input}: expected an input error, got {other:?}"),
            }
        }
    }

    #[test]
    fn defaults_are_f64_one_iteration_seed_zero() {
        assert_eq!(
            MatmulInput::parse(&json!({"n": 5})).unwrap(),
            MatmulInput {
                n: 5,
                dtype: Dtype::F64,
                iterations: 1,
                seed: 0
            }
        );
    }

    #[test]
    fn a_cancelled_flag_stops_before_multiplying() {
        let flag = CancelFlag::new();
        flag.cancel(CancelReason::RunTimeout);
        assert_eq!(
            MatmulExecutor.run(&json!({"n": 64, "iterations": 1000}), &flag),
            Err(ExecError::Cancelled(CancelReason::RunTimeout))
        );
    }
}

#[cfg(test)]
mod measure {
    use super::*;

    /// Prints GFLOP/s and verification time (dev profile: dependencies at opt-level 2).
    #[test]
    #[ignore = "measurement, run by hand with --ignored --nocapture"]
    fn matmul_throughput() {
        for dtype in ["f32", "f64"] {
            for n in [256, 512, 1024] {
                let task = json!({"n": n, "dtype": dtype, "iterations": 1, "seed": 1});
                let result = MatmulExecutor.run(&task, &CancelFlag::new()).unwrap();
                let started = Instant::now();
                verify_matmul(&task, &result).unwrap();
                println!(
                    "{dtype} n={n}: {:.3} s, {:.1} GFLOP/s, verify {:.3} s",
                    result["seconds"].as_f64().unwrap(),
                    result["gflops"].as_f64().unwrap(),
                    started.elapsed().as_secs_f64()
                );
            }
        }
    }
}

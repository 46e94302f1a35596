//! T9 as a property: any OAuthClient and Scope within the CRDs' limits is judged in bounded
//! time and memory, templates rendered with the largest values included. The objects are
//! drawn from the CRD schemas themselves (every string, list and map up to its limit, most
//! often at it, and repetitive), and template sources from the constructs a template may use.
//! Memory is the peak of what this thread allocated while judging (a counting allocator).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::{Duration, Instant};

use kauth::catalog::{Catalog, ClientInput, NamespaceLabels, ScopeInput};
use kauth::crd::{OAuthClientSpec, ScopeSpec};
use kauth::secret_contents::SecretValues;
use kauth::validation::{CredentialSource, GeneratedSecret, validate_client};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

/// Counts this thread's live heap bytes and their peak.
struct Counting;

thread_local! {
    static LIVE: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

fn add(n: usize) {
    let _ = LIVE.try_with(|live| {
        let now = live.get() + n;
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

fn sub(n: usize) {
    let _ = LIVE.try_with(|live| live.set(live.get().saturating_sub(n)));
}

// SAFETY: every call goes to System with the same layout; only counters are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        add(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        sub(layout.size());
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        sub(layout.size());
        add(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// How long and how many bytes (at peak, above what was live before) `work` takes.
fn measure(work: impl FnOnce()) -> (Duration, usize) {
    let before = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(before));
    let started = Instant::now();
    work();
    (started.elapsed(), PEAK.with(Cell::get) - before)
}

/// Budgets per object, in a debug build: far above what a valid object needs, far below what
/// a template bomb or a quadratic check would take.
const TIME: Duration = Duration::from_secs(2);
const BYTES: usize = 48 * 1024 * 1024;

/// A small deterministic generator (splitmix64), seeded by proptest.
struct Draw(u64);

impl Draw {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// A length up to `max`: most often `max` itself, the largest input the schema allows.
    fn length(&mut self, max: usize) -> usize {
        match self.below(4) {
            0 | 1 => max,
            2 => self.below(max + 1),
            _ => self.below(8.min(max + 1)),
        }
    }

    /// A string of `n` characters repeating one piece (repetitive input is the worst case
    /// for many checks), or of varied pieces.
    fn string(&mut self, max: usize) -> String {
        const PIECES: &[&str] = &[
            "x",
            "ΐ",
            "a.b",
            "https://h.example.com/",
            "{{ client_id }}",
            "%",
            "\"",
            "-",
            "payments.",
            "..",
            "0",
        ];
        let n = self.length(max);
        let repeat = self.below(2) == 0;
        let first = PIECES[self.below(PIECES.len())];
        let mut out = String::new();
        while out.chars().count() < n {
            let piece = if repeat {
                first
            } else {
                PIECES[self.below(PIECES.len())]
            };
            out.push_str(piece);
        }
        out.chars().take(n).collect()
    }

    /// A template source of allowed constructs (and now and then a forbidden one), up to the
    /// longest source allowed.
    fn template(&mut self) -> String {
        const PIECES: &[&str] = &[
            "{{ client_id }}",
            "{{ client_secret }}",
            "{{ scopes | join(', ') }}",
            "{{ audiences | join(' ') | upper }}",
            "{{ client_secret | replace('a', client_id) }}",
            "{{ issuer ~ token_url }}",
            "{% if 'orders.read' in scopes %}yes{% else %}no{% endif %}",
            "{{ scopes | sort | string }}",
            "{{ grant_types | first | lower }}",
            "text ",
            "{{ 'x' * 100000000 }}",
            "{% for s in scopes %}{{ s }}{% endfor %}",
        ];
        let max = kauth::crd::limits::TEMPLATE_SOURCE;
        let mut out = String::new();
        let target = self.length(max);
        while out.len() < target {
            let piece = PIECES[self.below(PIECES.len())];
            if out.len() + piece.len() > max {
                break;
            }
            out.push_str(piece);
        }
        out
    }

    /// A value of `schema` (an openAPIV3Schema node), every limit honoured.
    fn value(&mut self, schema: &Value, path: &str) -> Value {
        let limit =
            |name: &str, default: usize| schema.get(name).and_then(Value::as_u64).map_or(default, |n| n as usize);
        if let Some(choices) = schema.get("enum").and_then(Value::as_array) {
            return choices[self.below(choices.len())].clone();
        }
        match schema.get("type").and_then(Value::as_str) {
            Some("string") => Value::String(self.string(limit("maxLength", 64))),
            Some("boolean") => Value::Bool(self.below(2) == 0),
            Some("integer") | Some("number") => json!(self.below(1000)),
            Some("array") => {
                let n = self.length(limit("maxItems", 4));
                let items = schema.get("items").cloned().unwrap_or(json!({"type": "string"}));
                Value::Array((0..n).map(|_| self.value(&items, path)).collect())
            }
            _ => {
                let mut map = Map::new();
                if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
                    for (k, v) in properties {
                        if self.below(10) < 7 {
                            map.insert(k.clone(), self.value(v, &format!("{path}.{k}")));
                        }
                    }
                } else if let Some(values) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                    for _ in 0..self.length(limit("maxProperties", 4)) {
                        let key: String = self
                            .string(40)
                            .chars()
                            .map(|c| {
                                if c.is_ascii_alphanumeric() {
                                    c.to_ascii_uppercase()
                                } else {
                                    '_'
                                }
                            })
                            .collect();
                        let value = if path.ends_with(".template") && self.below(4) != 0 {
                            Value::String(self.template())
                        } else {
                            self.value(values, path)
                        };
                        map.insert(format!("K{key}"), value);
                    }
                }
                Value::Object(map)
            }
        }
    }
}

fn spec_schema(kind: &str) -> Value {
    kauth::schema_bounds::SCHEMAS[kind]["properties"]["spec"].clone()
}

/// The largest values a template may see.
fn largest_values() -> (String, String, String, String, Vec<String>, Vec<String>, Vec<String>) {
    (
        "c".repeat(317),
        "s".repeat(64),
        format!("https://{}", "i".repeat(500)),
        format!("https://{}/token", "i".repeat(500)),
        vec!["v".repeat(256); 65],
        vec!["a".repeat(2048); 16],
        vec!["g".repeat(64); 8],
    )
}

/// Judges a client and a Scope drawn from `seed`: validation, the catalog with both, and the
/// client's Secret rendered with the largest values, within the budgets.
fn judge(seed: u64) -> Result<(), TestCaseError> {
    let mut draw = Draw(seed);
    let client: Option<OAuthClientSpec> = serde_json::from_value(draw.value(&spec_schema("OAuthClient"), "spec")).ok();
    let scope: Option<ScopeSpec> = serde_json::from_value(draw.value(&spec_schema("Scope"), "spec")).ok();
    let (Some(client), Some(scope)) = (client, scope) else {
        return Ok(());
    };
    let (id, secret, issuer, token_url, scopes, audiences, grant_types) = largest_values();
    let (took, bytes) = measure(|| {
        let settings = validate_client("app", &client);
        let catalog = Catalog::evaluate(
            &[ClientInput::of("shop", "app", &client)],
            &[ScopeInput::of("orders", "read", &scope)],
            &NamespaceLabels::new(),
        );
        assert_eq!(catalog.clients.len(), 1);
        if let Ok(settings) = settings
            && let CredentialSource::Generated(GeneratedSecret { contents, .. }) = &settings.secret
        {
            let values = SecretValues {
                client_id: &id,
                client_secret: &secret,
                issuer: &issuer,
                token_url: &token_url,
                token_endpoint_auth_method: "client_secret_basic",
                scopes: &scopes,
                audiences: &audiences,
                grant_types: &grant_types,
            };
            let rendered = contents.render(&values).expect("a valid template renders");
            let total: usize = rendered.values().map(String::len).sum();
            assert!(total <= 1024 * 1024, "a Secret holds 1 MiB; this one {total}");
        }
    });
    prop_assert!(took < TIME, "seed {seed}: {took:?}");
    prop_assert!(bytes < BYTES, "seed {seed}: {bytes} bytes at peak");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_object_within_the_limits_is_judged_in_bounded_time_and_memory(seed in any::<u64>()) {
        judge(seed)?;
    }
}

/// The largest and most repetitive client the schema allows, every field at its limit.
#[test]
fn the_largest_client_the_schema_allows_is_judged_within_the_budgets() {
    let mut largest = 0;
    for seed in 0..64 {
        let mut draw = Draw(seed);
        // Every property present, every length at its limit.
        fn full(draw: &mut Draw, schema: &Value, path: &str) -> Value {
            let limit = |name: &str| schema.get(name).and_then(Value::as_u64).map(|n| n as usize);
            if schema.get("enum").is_some() {
                return draw.value(schema, path);
            }
            match schema.get("type").and_then(Value::as_str) {
                Some("string") => Value::String("ΐ".repeat(limit("maxLength").unwrap_or(64))),
                Some("array") => {
                    let items = &schema["items"];
                    Value::Array(
                        (0..limit("maxItems").unwrap_or(4))
                            .map(|_| full(draw, items, path))
                            .collect(),
                    )
                }
                Some("object") | None if schema.get("properties").is_some() => Value::Object(
                    schema["properties"]
                        .as_object()
                        .unwrap()
                        .iter()
                        .map(|(k, v)| (k.clone(), full(draw, v, &format!("{path}.{k}"))))
                        .collect(),
                ),
                Some("object") => Value::Object(
                    (0..limit("maxProperties").unwrap_or(4))
                        .map(|i| {
                            let value = if path.ends_with(".template") {
                                Value::String("{{ audiences | join(' ') }}".to_string())
                            } else {
                                full(draw, &schema["additionalProperties"], path)
                            };
                            (format!("K{i}"), value)
                        })
                        .collect(),
                ),
                _ => draw.value(schema, path),
            }
        }
        let value = full(&mut draw, &spec_schema("OAuthClient"), "spec");
        largest = largest.max(value.to_string().len());
        let Ok(client) = serde_json::from_value::<OAuthClientSpec>(value) else {
            continue;
        };
        let (took, bytes) = measure(|| {
            let _ = validate_client("app", &client);
        });
        assert!(took < TIME && bytes < BYTES, "{took:?}, {bytes} bytes");
    }
    assert!(largest > 500_000, "the largest object drawn is {largest} bytes");
}

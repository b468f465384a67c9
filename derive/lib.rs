//! `#[derive(GoKeys)]`: implements `crate::cni::gokeys::GoKeys` for a config type from the same
//! serde attributes its `Deserialize` derive reads, so that a struct's JSON keys are listed once,
//! by the compiler, and can never drift from the parser.
//!
//! What it reads: the field names with `rename` (or the container's `rename_all`), `flatten`,
//! `skip`/`skip_deserializing`; on the container `try_from`/`from` (the source type's shape) and
//! `transparent`. Enums whose variants are all units are strings (scalars). `alias` is refused:
//! Go has one name per field, and matching other spellings is what the trait is for.

use proc_macro::TokenStream;
use proc_macro2::TokenStream as Tokens;
use quote::quote;
use syn::{parse_macro_input, Data, DeriveInput, Fields, LitStr};

#[proc_macro_derive(GoKeys, attributes(serde))]
pub fn derive_go_keys(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    match expand(&input) {
        Ok(t) => t.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

#[derive(Default)]
struct Container {
    rename_all: Option<String>,
    from: Option<syn::Type>,
    transparent: bool,
}

#[derive(Default)]
struct FieldAttrs {
    rename: Option<String>,
    flatten: bool,
    skip: bool,
}

fn expand(input: &DeriveInput) -> syn::Result<Tokens> {
    if !input.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            &input.generics,
            "GoKeys: generic types are not supported",
        ));
    }
    let name = &input.ident;
    let c = container_attrs(&input.attrs)?;
    let body = if let Some(from) = &c.from {
        quote! { <#from as crate::cni::gokeys::GoKeys>::shape() }
    } else {
        match &input.data {
            Data::Struct(s) => struct_shape(&c, &s.fields)?,
            Data::Enum(e) => {
                if let Some(v) = e.variants.iter().find(|v| !matches!(v.fields, Fields::Unit)) {
                    return Err(syn::Error::new_spanned(
                        v,
                        "GoKeys: only enums of unit variants (strings) can be derived; implement GoKeys by hand",
                    ));
                }
                quote! { crate::cni::gokeys::Shape::Scalar }
            }
            Data::Union(u) => {
                return Err(syn::Error::new_spanned(
                    u.union_token,
                    "GoKeys: unions are not supported",
                ))
            }
        }
    };
    Ok(quote! {
        impl crate::cni::gokeys::GoKeys for #name {
            fn shape() -> crate::cni::gokeys::Shape {
                #body
            }
        }
    })
}

fn struct_shape(c: &Container, fields: &Fields) -> syn::Result<Tokens> {
    let named = match fields {
        Fields::Named(n) => &n.named,
        Fields::Unnamed(u) if u.unnamed.len() == 1 => {
            // A newtype reads as its content.
            let ty = &u.unnamed[0].ty;
            return Ok(quote! { <#ty as crate::cni::gokeys::GoKeys>::shape() });
        }
        Fields::Unit => return Ok(quote! { crate::cni::gokeys::Shape::Scalar }),
        Fields::Unnamed(u) => {
            return Err(syn::Error::new_spanned(
                u,
                "GoKeys: tuple structs are lists, not objects",
            ))
        }
    };
    if c.transparent {
        let mut kept = Vec::new();
        for f in named {
            if !field_attrs(&f.attrs)?.skip {
                kept.push(f);
            }
        }
        if let [f] = kept[..] {
            let ty = &f.ty;
            return Ok(quote! { <#ty as crate::cni::gokeys::GoKeys>::shape() });
        }
        return Err(syn::Error::new_spanned(
            named,
            "GoKeys: transparent needs exactly one field",
        ));
    }
    let mut entries = Vec::new();
    for f in named {
        let a = field_attrs(&f.attrs)?;
        if a.skip {
            continue;
        }
        let ty = &f.ty;
        let ident = f.ident.as_ref().expect("named field");
        let key = match (&a.rename, a.flatten) {
            (_, true) => String::new(),
            (Some(r), false) => r.clone(),
            (None, false) => rename_all(&ident.to_string(), c.rename_all.as_deref(), ident)?,
        };
        let flatten = a.flatten;
        entries.push(quote! {
            crate::cni::gokeys::Field {
                key: #key,
                shape: <#ty as crate::cni::gokeys::GoKeys>::shape,
                flatten: #flatten,
            }
        });
    }
    Ok(quote! {
        const FIELDS: &[crate::cni::gokeys::Field] = &[#(#entries),*];
        crate::cni::gokeys::Shape::Struct(FIELDS)
    })
}

fn container_attrs(attrs: &[syn::Attribute]) -> syn::Result<Container> {
    let mut c = Container::default();
    for attr in attrs.iter().filter(|a| a.path().is_ident("serde")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("rename_all") {
                if meta.input.peek(syn::token::Paren) {
                    meta.parse_nested_meta(|inner| {
                        let v: LitStr = inner.value()?.parse()?;
                        if inner.path.is_ident("deserialize") {
                            c.rename_all = Some(v.value());
                        }
                        Ok(())
                    })?;
                } else {
                    c.rename_all = Some(meta.value()?.parse::<LitStr>()?.value());
                }
            } else if meta.path.is_ident("try_from") || meta.path.is_ident("from") {
                c.from = Some(meta.value()?.parse::<LitStr>()?.parse()?);
            } else if meta.path.is_ident("transparent") {
                c.transparent = true;
            } else if meta.path.is_ident("untagged") || meta.path.is_ident("tag") || meta.path.is_ident("content") {
                return Err(meta.error("GoKeys: tagged or untagged enums need a hand-written GoKeys"));
            } else {
                skip_value(&meta)?;
            }
            Ok(())
        })?;
    }
    Ok(c)
}

fn field_attrs(attrs: &[syn::Attribute]) -> syn::Result<FieldAttrs> {
    let mut a = FieldAttrs::default();
    for attr in attrs.iter().filter(|a| a.path().is_ident("serde")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("rename") {
                if meta.input.peek(syn::token::Paren) {
                    meta.parse_nested_meta(|inner| {
                        let v: LitStr = inner.value()?.parse()?;
                        if inner.path.is_ident("deserialize") {
                            a.rename = Some(v.value());
                        }
                        Ok(())
                    })?;
                } else {
                    a.rename = Some(meta.value()?.parse::<LitStr>()?.value());
                }
            } else if meta.path.is_ident("flatten") {
                a.flatten = true;
            } else if meta.path.is_ident("skip") || meta.path.is_ident("skip_deserializing") {
                a.skip = true;
            } else if meta.path.is_ident("alias") {
                return Err(
                    meta.error("GoKeys: no aliases; cni::gokeys already matches every spelling Go's decoder accepts")
                );
            } else {
                skip_value(&meta)?;
            }
            Ok(())
        })?;
    }
    Ok(a)
}

/// Attributes GoKeys does not need (`default`, `skip_serializing_if`, `deserialize_with` …):
/// consume their value so parsing goes on.
fn skip_value(meta: &syn::meta::ParseNestedMeta) -> syn::Result<()> {
    if meta.input.peek(syn::Token![=]) {
        meta.value()?.parse::<syn::Expr>()?;
    } else if meta.input.peek(syn::token::Paren) {
        meta.input.parse::<proc_macro2::Group>()?;
    }
    Ok(())
}

/// serde's `rename_all` rules for a snake_case field name.
fn rename_all(field: &str, rule: Option<&str>, span: &syn::Ident) -> syn::Result<String> {
    let field = field.strip_prefix("r#").unwrap_or(field);
    let words = || field.split('_').filter(|w| !w.is_empty());
    let capitalised = |w: &str| {
        let mut c = w.chars();
        c.next()
            .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
            .unwrap_or_default()
    };
    Ok(match rule {
        None => field.to_string(),
        Some("lowercase") => field.to_ascii_lowercase(),
        Some("UPPERCASE") => field.to_ascii_uppercase(),
        Some("snake_case") => field.to_string(),
        Some("SCREAMING_SNAKE_CASE") => field.to_ascii_uppercase(),
        Some("kebab-case") => field.replace('_', "-"),
        Some("SCREAMING-KEBAB-CASE") => field.replace('_', "-").to_ascii_uppercase(),
        Some("PascalCase") => words().map(capitalised).collect(),
        Some("camelCase") => {
            let mut out = String::new();
            for (i, w) in words().enumerate() {
                out += &if i == 0 { w.to_string() } else { capitalised(w) };
            }
            out
        }
        Some(other) => {
            return Err(syn::Error::new_spanned(
                span,
                format!("GoKeys: unknown rename_all {other:?}"),
            ))
        }
    })
}

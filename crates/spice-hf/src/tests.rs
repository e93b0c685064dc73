//! The facade re-exports, never wraps: its types are the layers' types.

#[test]
fn facade_types_are_the_layer_types() {
    fn same<T: 'static, U: 'static>() -> bool {
        std::any::TypeId::of::<T>() == std::any::TypeId::of::<U>()
    }
    assert!(same::<crate::hub::ModelRef, spice_hf_hub::ModelRef>());
    assert!(same::<crate::hub::HubClient, spice_hf_hub::HubClient>());
    assert!(same::<crate::cache::Cache, spice_hf_cache::Cache>());
    assert!(same::<crate::cache::Error, spice_hf_cache::Error>());
    assert!(same::<
        crate::backend::BackendKind,
        spice_hf_backend::BackendKind,
    >());
    assert!(same::<
        crate::models::llama::Llama,
        spice_hf_models::llama::Llama,
    >());
    // A value from one path is accepted where the other is expected.
    let r: spice_hf_hub::ModelRef = crate::hub::ModelRef::parse("org/name").unwrap();
    assert_eq!(r.repo(), "org/name");
}

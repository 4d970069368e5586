use super::*;

fn model(name: &str, gib: f64) -> LoadedModel {
    let bytes = (gib * f64::from(1u32 << 30)) as u64;
    LoadedModel {
        name: name.into(),
        model: name.into(),
        size: bytes,
        size_vram: bytes,
        expires_at: None,
    }
}

fn gpu(free_gib: f64) -> Vec<crate::gpu::GpuReading> {
    vec![crate::gpu::GpuReading {
        index: 0,
        name: "sim".into(),
        total_bytes: 8.0 * f64::from(1u32 << 30),
        used_bytes: (8.0 - free_gib) * f64::from(1u32 << 30),
        free_bytes: free_gib * f64::from(1u32 << 30),
        processes: Vec::new(),
    }]
}

const GIB: f64 = 1073741824.0;

#[test]
fn auto_unloads_nothing_when_the_job_fits_and_the_largest_model_first_when_it_does_not() {
    let loaded = vec![model("small", 1.0), model("qwen", 4.7)];
    assert!(choose_victims(Policy::Auto, &loaded, Some(&gpu(3.0)), 2.0 * GIB).is_empty());
    let victims = choose_victims(Policy::Auto, &loaded, Some(&gpu(1.0)), 4.0 * GIB);
    assert_eq!(
        victims.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
        ["qwen"]
    );
    let victims = choose_victims(Policy::Auto, &loaded, Some(&gpu(1.0)), 6.5 * GIB);
    assert_eq!(victims.len(), 2);
}

#[test]
fn auto_without_a_gpu_reading_unloads_what_is_on_the_gpu_but_not_cpu_only_models() {
    let mut cpu_only = model("cpu", 2.0);
    cpu_only.size_vram = 0;
    let loaded = vec![cpu_only, model("qwen", 4.7)];
    let victims = choose_victims(Policy::Auto, &loaded, None, GIB);
    assert_eq!(
        victims.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
        ["qwen"]
    );
}

#[test]
fn always_and_never_do_what_they_say() {
    let loaded = vec![model("a", 1.0), model("b", 1.0)];
    assert_eq!(
        choose_victims(Policy::Always, &loaded, Some(&gpu(7.0)), 0.0).len(),
        2
    );
    assert!(choose_victims(Policy::Never, &loaded, Some(&gpu(0.0)), 8.0 * GIB).is_empty());
}

#[test]
fn policies_and_after_queue_actions_parse_with_clear_errors() {
    assert_eq!("AUTO".parse::<Policy>(), Ok(Policy::Auto));
    assert!("sometimes"
        .parse::<Policy>()
        .unwrap_err()
        .contains("always, auto, share or never"));
    assert_eq!("leave".parse::<AfterQueue>(), Ok(AfterQueue::Leave));
    assert!("drop"
        .parse::<AfterQueue>()
        .unwrap_err()
        .contains("restore or leave"));
}

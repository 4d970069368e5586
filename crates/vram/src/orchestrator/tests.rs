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

fn gpu(free_gib: f64) -> crate::gpu::GpuReading {
    crate::gpu::GpuReading {
        index: 0,
        name: "sim".into(),
        total_bytes: 8.0 * f64::from(1u32 << 30),
        used_bytes: (8.0 - free_gib) * f64::from(1u32 << 30),
        free_bytes: free_gib * f64::from(1u32 << 30),
        processes: Vec::new(),
    }
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

/// Cards read from a list the test changes.
struct Cards(Mutex<Vec<crate::gpu::GpuReading>>);

impl crate::gpu::GpuProbe for Cards {
    fn read(&self) -> Result<Vec<crate::gpu::GpuReading>, String> {
        Ok(self.0.lock().unwrap().clone())
    }
}

fn card(index: u32, used_gib: f64, processes: &[(&str, f64)]) -> crate::gpu::GpuReading {
    crate::gpu::GpuReading {
        index,
        processes: processes
            .iter()
            .enumerate()
            .map(|(i, (name, gib))| crate::gpu::GpuProcess {
                pid: 1000 + i as u32,
                name: name.to_string(),
                used_bytes: Some(gib * GIB),
                owner: crate::gpu::Owner::Other,
            })
            .collect(),
        ..gpu(8.0 - used_gib)
    }
}

#[test]
fn a_lane_takes_its_turn_with_the_llms_only_on_their_card_or_where_it_cannot_tell() {
    let cards = Arc::new(Cards(Mutex::new(vec![
        card(0, 5.0, &[("ollama", 4.7)]),
        card(1, 0.3, &[]),
    ])));
    let orchestrator = Orchestrator::with_cards(
        VramConfig::default(),
        OllamaClient::new("http://127.0.0.1:9").unwrap(),
        cards.clone(),
        Vec::new(),
    );
    assert!(orchestrator.needs_turn(0), "the LLMs' card");
    assert!(
        !orchestrator.needs_turn(1),
        "an idle card renders beside the LLM"
    );
    assert!(orchestrator.needs_turn(2), "a card NVML does not show");

    // 3 GiB in use that no listed process explains: it may be an LLM in another container.
    *cards.0.lock().unwrap() = vec![card(0, 5.0, &[("ollama", 4.7)]), card(1, 3.0, &[])];
    assert!(orchestrator.needs_turn(1));
    // A desktop on the card is told apart.
    *cards.0.lock().unwrap() = vec![
        card(0, 5.0, &[("ollama", 4.7)]),
        card(1, 3.0, &[("Xorg", 3.0)]),
    ];
    assert!(!orchestrator.needs_turn(1));

    // Ollama moves its runner to card 1: that card becomes the LLMs', the first card renders freely.
    *cards.0.lock().unwrap() = vec![card(0, 0.2, &[]), card(1, 5.0, &[("ollama", 4.7)])];
    assert!(orchestrator.needs_turn(1));
    assert!(!orchestrator.needs_turn(0));
}

#[test]
fn lanes_are_a_card_each_on_a_gpu_build_and_confine_their_worker_to_it() {
    use crate::gpu::LaneDevice;
    assert_eq!(
        LaneDevice::for_lanes(3, None),
        vec![LaneDevice::Default, LaneDevice::Cpu, LaneDevice::Cpu]
    );
    assert_eq!(
        LaneDevice::for_lanes(1, Some(&[0, 1])),
        vec![LaneDevice::Default]
    );
    assert_eq!(
        LaneDevice::for_lanes(2, Some(&[0, 1, 2])),
        vec![LaneDevice::Gpu { index: 0 }, LaneDevice::Gpu { index: 1 }]
    );
    let env = LaneDevice::Gpu { index: 1 }.worker_env();
    for (key, value) in [
        ("CUDA_DEVICE_ORDER", "PCI_BUS_ID"),
        ("CUDA_VISIBLE_DEVICES", "1"),
        ("GGML_VK_VISIBLE_DEVICES", "1"),
    ] {
        assert!(env.contains(&(key.into(), value.into())), "{env:?}");
    }
    assert!(LaneDevice::Default.worker_env().is_empty());
    assert!(LaneDevice::Cpu.worker_env().is_empty());
}

// A network saves its weights, and loads them two ways: `Net::load(&device, path)` makes a new
// network, `net.load(path)` (`ModuleIo`) loads into an existing one. The generated associated
// function takes no `self`, so the method call resolves to `ModuleIo::load`.
use declnet::prelude::*;

network! {
    struct Net(x: [N, 4]) -> [N, 2] {
        fc1: Linear<4, 8>, ReLU, Linear<8, 2>
    }
}

fn main() -> Result<()> {
    let path = std::env::temp_dir().join(format!("declnet_loads_{}.safetensors", std::process::id()));
    let saved = Net::new(&Cpu, &mut seeded(1));
    saved.save(&path)?;
    let fresh = Net::load(&Cpu, &path)?;
    let mut other = Net::new(&Cpu, &mut seeded(2));
    other.load(&path)?;
    std::fs::remove_file(&path).ok();
    let x = Tensor::ones([3, 4], &Cpu);
    let expected = saved.forward(&x)?.to_vec();
    assert_eq!(fresh.forward(&x)?.to_vec(), expected);
    assert_eq!(other.forward(&x)?.to_vec(), expected);
    assert_eq!(other.param_names()[0], "fc1.weight");
    Ok(())
}

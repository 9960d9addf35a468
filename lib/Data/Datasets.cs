namespace Carso.Data;

/// <summary>Datasets by name, for scripts whose settings name one.</summary>
public static class Datasets
{
    public static readonly IReadOnlyList<string> Names = ["fashion-mnist", "mnist", "cifar10", "cifar100", "cifar100-coarse"];

    /// <summary>Loads one split of a named dataset from its default location, or from <paramref name="folder"/>.</summary>
    public static Dataset Load(string name, Split split, string? folder = null) => name.ToLowerInvariant() switch
    {
        "fashion-mnist" or "fashionmnist" => FashionMnist.Load(split, folder),
        "mnist" => Mnist.Load(split, folder),
        "cifar10" or "cifar-10" => Cifar.LoadCifar10(split, folder),
        "cifar100" or "cifar-100" => Cifar.LoadCifar100(split, Cifar.Cifar100Labels.Fine, folder),
        "cifar100-coarse" => Cifar.LoadCifar100(split, Cifar.Cifar100Labels.Coarse, folder),
        _ => throw new ArgumentException($"unknown dataset '{name}': known are {string.Join(", ", Names)}"),
    };
}

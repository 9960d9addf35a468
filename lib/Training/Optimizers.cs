using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Carso.Training;

public enum OptimizerKind { Sgd, Adam }

/// <summary>Optimiser settings. Defaults: SGD with momentum 0.9 and weight decay 5e-4 (Madry et al., Rice et al.).</summary>
public sealed record OptimizerSettings(
    OptimizerKind Kind = OptimizerKind.Sgd,
    double LearningRate = 0.1,
    double Momentum = 0.9,
    double WeightDecay = 5e-4,
    bool Nesterov = false);

public static class Optimizers
{
    public static optim.Optimizer Create(IEnumerable<Parameter> parameters, OptimizerSettings settings)
    {
        if (!(settings.LearningRate > 0)) throw new ArgumentOutOfRangeException(nameof(settings), $"learning rate must be > 0, got {settings.LearningRate}");
        return settings.Kind switch
        {
            OptimizerKind.Sgd => optim.SGD(parameters, settings.LearningRate, momentum: settings.Momentum,
                weight_decay: settings.WeightDecay, nesterov: settings.Nesterov),
            OptimizerKind.Adam => optim.Adam(parameters, settings.LearningRate, weight_decay: settings.WeightDecay),
            _ => throw new ArgumentOutOfRangeException(nameof(settings), $"unknown optimiser {settings.Kind}"),
        };
    }

    public static void SetLearningRate(optim.Optimizer optimizer, double learningRate)
    {
        foreach (var group in optimizer.ParamGroups) group.LearningRate = learningRate;
    }
}

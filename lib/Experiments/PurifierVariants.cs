using TorchSharp;
using Carso.Data;
using Carso.Defence;
using Carso.IO;
using Carso.Models;
using Carso.Training;
using static TorchSharp.torch;

namespace Carso.Experiments;

/// <summary>
/// Ablations that train their own purifier for the committed classifier: build it, train it, measure its latent, and
/// hand CARSO with it to <see cref="Ablation.Run"/>. One implementation for every such ablation.
/// </summary>
public static class PurifierVariants
{
    /// <summary>A fresh purifier for the committed classifier's <paramref name="layers"/>, on the device. Its weights come
    /// from torch's global generator: the script seeds it first (the same seed gives every variant of one shape the same
    /// initialisation).</summary>
    public static Purifier Build(nn.Module<Tensor, Tensor> classifier, IReadOnlyList<string> layers, PurifierSettings settings, Device device) =>
        Purifier.Build(settings, PurifierCheckpoint.LayerShapes(classifier, layers, [1, 28, 28]), [1, 28, 28]).to(device);

    /// <summary>
    /// Trains <paramref name="purifier"/> (for the classifier, reading <paramref name="layers"/>) with
    /// <paramref name="training"/> at the ablation's threat (resumably, in savePath + ".checkpoint", when a save path is
    /// given; "training seconds" sums its epochs across resumes), saves it to <paramref name="savePath"/> when given, and
    /// returns CARSO with it as the variant, with the numbers that say what training made of the latent: training
    /// seconds, final training BCE and KL, held-out BCE and KL, active latent units, the sample spread, and the held-out
    /// accuracies of the last epoch.
    /// </summary>
    public static VariantModel TrainedCarso(VariantContext context, nn.Module<Tensor, Tensor> classifier, Purifier purifier,
        IReadOnlyList<string> layers, PurifierTrainingSettings training, CarsoSettings defence, Dataset train, Dataset validation,
        string? savePath = null)
    {
        // With a save path the training checkpoints beside it: a killed ablation resumes its training, a finished one is reloaded.
        var history = PurifierTraining.Train(classifier, layers, purifier, train, validation, training with { Threat = context.Budget.Threat },
            savePath is null ? null : savePath + ".checkpoint", context.Log, device: context.Device).History;
        var last = history[^1];
        purifier.eval();
        if (savePath is not null)
            PurifierCheckpoint.Save(savePath, purifier, PurifierSpec.For(classifier, layers, [1, 28, 28], purifier.Settings));
        return Ablation.Carso(context, new CarsoModel(classifier, purifier, layers, defence), new Dictionary<string, double>
        {
            ["training seconds"] = history.Sum(h => h.Seconds), ["final BCE"] = last.Bce, ["final KL"] = last.Kl,
            ["held-out BCE"] = last.HeldOutBce, ["held-out KL"] = last.HeldOutKl,
            ["active units"] = last.ActiveUnits, ["sample spread"] = last.SampleSpread,
            ["held-out defended clean"] = last.DefendedClean.Value, ["held-out defended PGD"] = last.DefendedPgd.Value,
        });
    }
}

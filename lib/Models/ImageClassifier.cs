using TorchSharp;
using static TorchSharp.torch;

namespace Carso.Models;

/// <summary>
/// Base of the classifiers: a module from images in [0, 1], [B, C, H, W], to logits [B, classes], which
/// standardises its input itself. Mean and std are NON-persistent buffers "mean" and "std" ([C, 1, 1]):
/// they follow the model across devices and dtypes but stay out of the state dict, which therefore matches
/// the published PyTorch checkpoints key for key.
/// </summary>
public abstract class ImageClassifier : nn.Module<Tensor, Tensor>
{
    Tensor mean, std;

    /// <param name="name">Module name, also used in error messages.</param>
    /// <param name="inputChannels">C: one mean and one std per channel.</param>
    /// <param name="mean">Per-channel mean of the [0, 1] inputs.</param>
    /// <param name="std">Per-channel std of the [0, 1] inputs, all > 0.</param>
    protected ImageClassifier(string name, int inputChannels, IReadOnlyList<double> mean, IReadOnlyList<double> std)
        : base(name)
    {
        InputNormalization.Validate(mean, std, inputChannels, name);
        this.mean = InputNormalization.ChannelTensor(mean);
        this.std = InputNormalization.ChannelTensor(std);
        register_buffer("mean", this.mean, persistent: false);
        register_buffer("std", this.std, persistent: false);
    }

    /// <summary>(x - mean) / std per channel: [B, C, H, W] -> [B, C, H, W].</summary>
    protected Tensor Standardise(Tensor x) => (x - mean) / std;

    // TorchSharp 0.107 moves only the buffers named_buffers() lists, and that never lists non-persistent
    // ones (its include_nonpersistent flag is ignored), so .to(device or dtype) would leave these behind.
    protected override void _toEpilog(ScalarType? dtype, Device? device, bool non_blocking)
    {
        base._toEpilog(dtype, device, non_blocking);
        mean = Follow("mean", mean, dtype, device, non_blocking);
        std = Follow("std", std, dtype, device, non_blocking);
    }

    Tensor Follow(string name, Tensor buffer, ScalarType? dtype, Device? device, bool nonBlocking)
    {
        var moved = buffer.to(dtype ?? buffer.dtype, device ?? buffer.device, disposeAfter: true, non_blocking: nonBlocking)
            .DetachFromDisposeScope();
        ConditionallyRegisterBuffer(name, moved, persistent: false);
        return moved;
    }

    // Module.Dispose releases the buffers named_buffers() lists, which leaves these out.
    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            mean.Dispose();
            std.Dispose();
        }
        base.Dispose(disposing);
    }
}

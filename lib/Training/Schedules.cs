namespace Carso.Training;

public enum ScheduleKind { Constant, Piecewise, Cosine, OneCycle }

/// <summary>
/// Learning-rate schedule over training progress t in [0, 1] (fraction of all iterations done).
/// Piecewise: multiply by Factor at each of Milestones (fractions, e.g. 0.5 and 0.75: Madry et al.).
/// Cosine: half a cosine from the peak to 0. OneCycle: linear warm-up from 0 to the peak at PeakAt,
/// then linear down to 0 (the cyclic schedule of Wong et al. 2020).
/// </summary>
public sealed record ScheduleSettings(
    ScheduleKind Kind = ScheduleKind.Piecewise,
    double[]? Milestones = null,
    double Factor = 0.1,
    double PeakAt = 0.4);

public static class Schedules
{
    /// <summary>The learning rate at progress t in [0, 1], for a peak (base) learning rate.</summary>
    public static Func<double, double> Create(ScheduleSettings settings, double peak) => settings.Kind switch
    {
        ScheduleKind.Constant => _ => peak,
        ScheduleKind.Piecewise => t => peak * Math.Pow(settings.Factor, (settings.Milestones ?? [0.5, 0.75]).Count(m => t >= m)),
        ScheduleKind.Cosine => t => peak * 0.5 * (1 + Math.Cos(Math.PI * Math.Clamp(t, 0, 1))),
        ScheduleKind.OneCycle => t => t < settings.PeakAt
            ? peak * t / settings.PeakAt
            : peak * Math.Max(0, (1 - t) / (1 - settings.PeakAt)),
        _ => throw new ArgumentOutOfRangeException(nameof(settings), $"unknown schedule {settings.Kind}"),
    };
}

using Carso.Evaluation;
using Carso.Experiments;

namespace Carso.Tests.Experiments;

/// <summary>The "reduced from the published protocol" text is generated from settings: every departure is named.</summary>
public class BudgetTests
{
    [Fact]
    public void PublishedSettingsAreDescribedAsPublished() =>
        Assert.Equal("budgets as published", Budget.Describe(CarsoProtocolSettings.Published, new CarsoProtocolSettings()));

    [Fact]
    public void ADepartureInANestedRecordIsNamedWithItsPath()
    {
        var departures = Budget.Departures(new { Points = 1000, Protocol = CarsoProtocolSettings.Published with { EotIter = 4 } },
            new { Points = 1000, Protocol = CarsoProtocolSettings.Published });
        Assert.Equal(["Protocol.EotIter 4 (published 20)"], departures.Select(d => d.ToString()));
    }

    [Fact]
    public void FewerPointsThanPublishedInAnAnonymousObjectIsAReduction()
    {
        // eval-carso describes its budget as new { Points, Protocol }: get-only properties, every one a setting.
        var text = Budget.Describe(new { Points = 500, Protocol = CarsoProtocolSettings.Published },
            new { Points = 1000, Protocol = CarsoProtocolSettings.Published });
        Assert.StartsWith("REDUCED from the published protocol: Points 500 (published 1000).", text);
        Assert.Contains("upper bound", text);
    }
}

using Loyalty.Host;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Time.Testing;

namespace Loyalty.Tests.Hostile;

/// <summary>Client faults are all counted, but logged a few lines a second at most, cleaned, without stack traces.</summary>
public sealed class ClientFaultsTests
{
    [Fact]
    public void AFloodOfFaults_IsCountedWhole_AndLoggedAtMostFiveLinesASecond()
    {
        var clock = new FakeTimeProvider(DateTimeOffset.UnixEpoch);
        var log = new ListLogger();
        using var faults = new ClientFaults(log, clock);

        for (int i = 0; i < 1_000; i++)
        {
            faults.Record(ClientFaultKind.Malformed, "/loyalty.v1.Members/Enroll", "bad\r\nline " + i);
        }

        clock.Advance(TimeSpan.FromSeconds(1));
        faults.Record(ClientFaultKind.Unauthenticated, "/loyalty.v1.Members/Enroll", "the key is not valid");

        Assert.Equal(1_001, faults.Total);
        Assert.Equal(ClientFaults.LogLinesPerSecondMax + 1, log.Lines.Count);
        Assert.All(log.Lines, l => Assert.DoesNotContain('\n', l));
        Assert.Contains("(995 more not logged since the previous line)", log.Lines[^1], StringComparison.Ordinal);
        Assert.All(log.Exceptions, Assert.Null);
    }

    private sealed class ListLogger : ILogger<ClientFaults>
    {
        public List<string> Lines { get; } = [];

        public List<Exception?> Exceptions { get; } = [];

        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            Lines.Add(formatter(state, exception));
            Exceptions.Add(exception);
        }
    }
}

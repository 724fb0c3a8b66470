using V1 = Loyalty.Api.V1;

namespace Loyalty.Tests.Infrastructure;

/// <summary>An engine whose reader keys run out of calls at once, for tests of what a call costs.</summary>
public static class ThrottledReader
{
    /// <summary>
    /// Starts an engine (SQLite) whose reader keys may make <paramref name="burst"/> calls at once
    /// and then one every ten seconds, with <paramref name="program"/> and a reader key for it.
    /// </summary>
    public static async Task<(InProcessEngine Engine, string Reader)> StartAsync(string name, string program, int burst)
    {
        InProcessEngine engine = await InProcessEngine.StartAsync(TestDatabases.Create(Backend.Sqlite, name), null,
            "--Quotas:Reader:UnaryPerSecond=0.1", $"--Quotas:Reader:UnaryBurst={burst}");
        await engine.Programs.PutProgramAsync(Wire.Program(program));
        V1.CreatedKey reader = await new V1.Access.AccessClient(engine.Invoker).CreateKeyAsync(new V1.CreateKeyRequest { ProgramId = program, Scope = V1.KeyScope.Reader, Name = "r" });
        return (engine, reader.Secret);
    }
}

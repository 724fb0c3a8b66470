using Loyalty.Storage;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Options;
using Orleans.Runtime;

namespace Loyalty.Grains;

/// <summary>Registers what member and program grains need besides storage.</summary>
public static class GrainsSiloBuilderExtensions
{
    /// <summary>Adds the program directory, the clock, member options and the due scheduler, plus storage.</summary>
    public static ISiloBuilder AddLoyaltyGrains(
        this ISiloBuilder silo,
        StorageOptions storage,
        Action<MemberOptions>? configureMembers = null,
        Action<LedgerCommitOptions>? configureLedger = null,
        Action<ScheduleOptions>? configureSchedule = null)
    {
        silo.AddLoyaltyStorage(storage, configureLedger);
        silo.Services.TryAddSingleton(TimeProvider.System);
        silo.Services.TryAddSingleton(EngineClock.System);
        silo.Services.AddOptions<MemberOptions>().Configure(o => configureMembers?.Invoke(o)).ValidateOnStart();
        silo.Services.AddSingleton<IValidateOptions<MemberOptions>, MemberOptionsValidation>();
        silo.Services.AddSingleton<ProgramDirectory>();
        silo.Services.AddSingleton<MemberServices>();
        silo.Services.TryAddSingleton(typeof(GrainReferences<>));
        silo.Services.AddOptions<ScheduleOptions>().Configure(o => configureSchedule?.Invoke(o));
        silo.Services.AddSingleton<ILifecycleParticipant<ISiloLifecycle>, DueScheduler>();
        return silo;
    }
}

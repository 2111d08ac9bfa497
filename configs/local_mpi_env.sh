# Sourced by tests/run.sh, bench/run.sh and configs/demo.sh: mpirun on this one
# machine, possibly as root (containers, CI), with more ranks than cores and no ssh
# (see docs/TROUBLESHOOTING.md). Cluster runs set their own MCA parameters.
if [ "$(id -u)" = 0 ]; then
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
export OMPI_MCA_rmaps_base_oversubscribe=1 OMPI_MCA_plm_rsh_agent= OMPI_MCA_mpi_yield_when_idle=1

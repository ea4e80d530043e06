# stability_synthetic.gp - renders the map of `make results-stability`:
# rows are the coherence sigma (1..50), columns the batch size B (1..49).
# Each cell: 0 = predicted and observed stable, 1 = predicted unstable but
# observed stable, 2 = observed unstable but predicted stable, 3 = both
# unstable (prediction: the exact mean-square criterion).
set terminal pngcairo size 900,700 font ",11"
set output "docs/results/stability_synthetic.png"
set title "Linearised SGD, n = 100, lr = 0.5: exact criterion vs 1000 steps x 10 runs"
set xlabel "batch size B"
set ylabel "coherence sigma"
set xrange [0.5:49.5]
set yrange [0.5:50.5]
set cbrange [-0.5:3.5]
set palette maxcolors 4
set palette defined (0 "#f7f7f7", 1 "#fdae61", 2 "#d7191c", 3 "#2c7bb6")
set cbtics ("both stable" 0, "predicted only" 1, "observed only" 2, "both unstable" 3)
unset key
set rmargin 18
plot "docs/results/stability_synthetic.dat" matrix using ($1 + 1):($2 + 1):3 with image

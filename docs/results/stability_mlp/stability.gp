# Renders stability.png from stability.dat: gnuplot stability.gp
# (run inside the report directory). 0 = both stable, 1 = predicted
# unstable only, 2 = observed unstable only, 3 = both unstable.
set terminal pngcairo size 800,600
set output "stability.png"
set title "SGD stability: exact criterion vs observed"
set xlabel "batch size"
set ylabel "learning rate"
set cbrange [-0.5:3.5]
set palette maxcolors 4
set palette defined (0 "#f7f7f7", 1 "#fdae61", 2 "#d7191c", 3 "#2c7bb6")
set rmargin 18
unset key
set xtics ("1" 0, "4" 1, "16" 2, "64" 3, "200" 4)
set ytics ("0.25" 0, "0.5" 1, "1" 2, "2" 3, "4" 4)
set cbtics ("both stable" 0, "predicted only" 1, "observed only" 2, "both unstable" 3)
plot "stability.dat" matrix with image
